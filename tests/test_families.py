"""One configuration class per model family: each family reads only its own fields, recipes pick
the family (``model.family``, a preset, or the task's default) and refuse one the task does not
train, directories written with the one flat configuration of before still load, and a family
outside the Transformer files is one class and one registry line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml

from transformerkit.checkpoint import CheckpointError, load_model_dir, read_model_config, save_model_dir
from transformerkit.config import (PRESETS, DecoderOnlyConfig, EncoderDecoderConfig, EncoderOnlyConfig,
                                   TransformerConfig, VisionConfig, preset)
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.models.families import FAMILIES, MODEL_CLASSES, model_class_for
from transformerkit.models.vision import VisionTransformer
from transformerkit.tasks import load_recipe

BEFORE = Path(__file__).resolve().parent / "fixtures" / "model-dirs-before-task"
FLAT = {f.name for cls in (EncoderDecoderConfig, DecoderOnlyConfig, EncoderOnlyConfig, VisionConfig)
        for f in dataclasses.fields(cls)}


def field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_each_family_has_only_the_fields_it_reads() -> None:
    shared = field_names(TransformerConfig)
    assert {"d_model", "d_ff", "num_heads", "positional", "norm_position", "attention_kernel"} <= shared
    assert field_names(DecoderOnlyConfig) - shared == {
        "vocab_size", "scale_embeddings", "type_vocab_size", "embedding_norm", "tie_embeddings", "pad_id", "bos_id",
        "eos_id", "num_decoder_layers"}
    assert field_names(VisionConfig) - shared == {"num_encoder_layers", "image_size", "patch_size", "num_channels",
                                                  "labels"}
    assert "image_size" not in field_names(EncoderOnlyConfig) and "labels" not in field_names(EncoderDecoderConfig)
    assert "num_encoder_layers" not in field_names(DecoderOnlyConfig)
    assert {"tgt_vocab_size", "copy_attention"} <= field_names(EncoderDecoderConfig) - field_names(EncoderOnlyConfig)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_the_family_of_its_class(name: str) -> None:
    config = preset(name)
    with torch.device("meta"):
        model = model_class_for(config)(config)
    assert type(model).config_class is type(config) and FAMILIES[config.family] is type(model)


@pytest.mark.parametrize("model_class, config, message", [
    (DecoderOnlyTransformer, EncoderOnlyConfig(), "reads DecoderOnlyConfig, not EncoderOnlyConfig"),
    (EncoderOnlyTransformer, DecoderOnlyConfig(), "reads EncoderOnlyConfig, not DecoderOnlyConfig"),
    (VisionTransformer, EncoderOnlyConfig(), "reads VisionConfig, not EncoderOnlyConfig"),
    (EncoderDecoderTransformer, VisionConfig(), "reads EncoderDecoderConfig, not VisionConfig"),
])
def test_a_family_refuses_another_familys_configuration(model_class: type, config: TransformerConfig,
                                                         message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model_class(config)


def test_a_field_of_another_family_is_an_unknown_key() -> None:
    with pytest.raises(ValueError, match="unknown configuration key"):
        preset("gpt-tiny", num_encoder_layers=2)
    with pytest.raises(ValueError, match="unknown configuration key"):
        preset("minilm-l6", image_size=28)
    with pytest.raises(ValueError, match="unknown configuration key"):
        preset("vit-28", vocab_size=100)


def test_from_shared_takes_what_two_families_share() -> None:
    bert = preset("minilm-l6", num_encoder_layers=2, labels=["a", "b"])
    config = EncoderDecoderConfig.from_shared(bert, num_encoder_layers=2, num_decoder_layers=2)
    assert (config.d_model, config.type_vocab_size, config.embedding_norm, config.layer_norm_eps) == (
        bert.d_model, 2, True, 1e-12)
    assert (config.num_encoder_layers, config.num_decoder_layers, config.tgt_vocab_size) == (2, 2, None)


@pytest.mark.parametrize("task", sorted(p.name for p in BEFORE.iterdir() if p.is_dir()))
def test_a_flat_config_from_before_loads_into_its_familys_class_and_is_written_back_without_the_rest(
        task: str, tmp_path: Path) -> None:
    flat = json.loads((BEFORE / task / "config.json").read_text(encoding="utf-8"))
    assert set(flat) - {"model_type"} == FLAT  # every family's fields, written by a16fd4e
    model, preprocessor, generation = load_model_dir(BEFORE / task)
    assert type(model.config) is type(model).config_class
    for name, value in model.config.to_dict().items():
        assert flat[name] == value, name
    save_model_dir(tmp_path / "again", model, preprocessor, generation)
    written = json.loads((tmp_path / "again" / "config.json").read_text(encoding="utf-8"))
    assert set(written) == field_names(type(model).config_class) | {"model_type", "task"}


def test_an_unknown_key_in_config_json_is_still_an_error(tmp_path: Path) -> None:
    directory = tmp_path / "model"
    model, preprocessor, generation = load_model_dir(BEFORE / "language-modeling")
    save_model_dir(directory, model, preprocessor, generation)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    (directory / "config.json").write_text(json.dumps({**config, "num_experts": 8}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="config.json: unknown configuration key"):
        read_model_config(directory)


# ------------------------------------------------------------------------------------------ recipes
def test_a_recipe_reads_the_model_section_into_the_tasks_family() -> None:
    run = load_recipe(None, ["data.train=x.tsv", "training.max_steps=5"])
    assert type(run.model) is EncoderDecoderConfig and run.model == EncoderDecoderConfig()
    run = load_recipe(None, ["task=language-modeling", "data.train=x.txt", "training.max_steps=5",
                             "model.num_decoder_layers=3"])
    assert type(run.model) is DecoderOnlyConfig and run.model.num_decoder_layers == 3
    run = load_recipe(None, ["task=image-classification", "data.train=digits", "training.max_steps=5",
                             "model.family=vit", "model.patch_size=8"])
    assert type(run.model) is VisionConfig and run.model.patch_size == 8


@pytest.mark.parametrize("overrides, message", [
    (["model.preset=gpt-tiny"], "model: the translation task trains encoder-decoder or rnn models, not "
                                r"decoder-only \(presets: base, big, small, tiny\)"),
    (["model.family=vit"], "model: the translation task trains encoder-decoder or rnn models, not vit"),
    (["task=language-modeling", "model.family=rnn"], "model: the language-modeling task trains decoder-only or rnn-lm "
                                                     "models, not rnn"),
    (["model.family=lstm"], "model.family: unknown family 'lstm'; choose from encoder-decoder, decoder-only"),
    (["model.family=encoder-decoder", "model.preset=gpt-tiny"],
     "model.preset: gpt-tiny is a decoder-only preset, model.family is encoder-decoder"),
    (["model.labels=a,b"], "unknown configuration key: model.labels"),
    (["task=language-modeling", "model.num_encoder_layers=2"], "unknown configuration key: model.num_encoder_layers"),
])
def test_a_family_the_task_does_not_train_is_refused_in_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_recipe(None, ["data.train=x.tsv", "training.max_steps=5", *overrides])


def test_run_yaml_names_the_family_and_reads_back_to_the_same_run(tmp_path: Path) -> None:
    run = load_recipe(None, ["task=classification", "data.train=x.tsv", "data.tokenizer=t", "training.max_steps=5",
                             "model.preset=minilm-l6", "model.num_encoder_layers=1"])
    values = run.to_dict()
    assert values["model"]["family"] == "encoder-only"
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    assert load_recipe(tmp_path / "run.yaml") == run


# ------------------------------------------------------------------------------- a family of its own
@dataclasses.dataclass
class BagOfWordsConfig:
    """A family that shares nothing with the Transformer's configuration."""

    vocab_size: int = 16
    labels: list[str] = dataclasses.field(default_factory=lambda: ["a", "b"])
    family = "bag-of-words"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> BagOfWordsConfig:
        return cls(**values)


class BagOfWords(torch.nn.Module):
    model_type = "test-bag-of-words"
    config_class = BagOfWordsConfig

    def __init__(self, config: BagOfWordsConfig) -> None:
        super().__init__()
        self.config = config
        self.classifier = torch.nn.EmbeddingBag(config.vocab_size, len(config.labels))


def test_a_new_family_is_its_class_and_one_registry_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODEL_CLASSES, BagOfWords.model_type, BagOfWords)  # the one line in models/families.py
    tokenizer = SubwordTokenizer.train(["a b c d e f g h"], vocab_size=16, min_frequency=1)
    model = BagOfWords(BagOfWordsConfig(vocab_size=tokenizer.vocab_size))
    save_model_dir(tmp_path / "bow", model, tokenizer, GenerationConfig(), task="classification")
    kind = read_model_config(tmp_path / "bow")
    assert (kind.model_class, kind.config, kind.task) == (BagOfWords, model.config, "classification")
    loaded, _, _ = load_model_dir(tmp_path / "bow")
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)
