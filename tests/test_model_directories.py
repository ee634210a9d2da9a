"""Model directories say what they are: ``config.json`` records the family (``model_type``) and
the task, training and ``convert`` write both, and verbs and endpoints dispatch on the recorded
task through one table (:data:`transformerkit.inference.INFERENCE`, ``serve.ENDPOINTS``).
Directories written before the task was recorded (fixtures made with main a16fd4e) still load,
with the task their model implies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from transformerkit.checkpoint import (CheckpointError, average_checkpoints, load_model_dir, read_model_config,
                                       save_model_dir)
from transformerkit.cli import main
from transformerkit.config import preset
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.inference import INFERENCE, model_task, task_function
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.models.families import MODEL_CLASSES

BEFORE = Path(__file__).resolve().parent / "fixtures" / "model-dirs-before-task"
FAMILIES = {"translation": "transformerkit-encoder-decoder", "summarization": "transformerkit-encoder-decoder",
            "language-modeling": "transformerkit-decoder-only", "image-generation": "transformerkit-decoder-only",
            "classification": "transformerkit-encoder-only", "question-answering": "transformerkit-encoder-only",
            "sentence-embedding": "transformerkit-encoder-only", "image-classification": "transformerkit-vit"}


def test_the_fixtures_are_in_the_format_before_the_task_was_recorded() -> None:
    assert sorted(p.name for p in BEFORE.iterdir() if p.is_dir()) == sorted(FAMILIES) == sorted(INFERENCE)
    for directory in BEFORE.iterdir():
        if directory.is_dir():
            assert "task" not in json.loads((directory / "config.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("task", sorted(FAMILIES))
def test_a_directory_from_before_loads_with_the_task_its_model_implies(task: str) -> None:
    kind = read_model_config(BEFORE / task)
    assert (kind.model_class.model_type, kind.task) == (FAMILIES[task], task)
    assert model_task(BEFORE / task) == task
    model, _, _ = load_model_dir(BEFORE / task)
    assert type(model) is kind.model_class and model.config == kind.config


@pytest.mark.parametrize("task", sorted(FAMILIES))
def test_a_directory_written_again_records_its_task_and_keeps_its_weights(task: str, tmp_path: Path) -> None:
    model, preprocessor, generation = load_model_dir(BEFORE / task)
    save_model_dir(tmp_path / "again", model, preprocessor, generation)
    written = json.loads((tmp_path / "again" / "config.json").read_text(encoding="utf-8"))
    assert (written["model_type"], written["task"]) == (FAMILIES[task], task)
    reloaded, _, _ = load_model_dir(tmp_path / "again")
    for (name, ours), (_, theirs) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(ours, theirs), name


def test_the_recorded_task_decides_not_the_heads(tmp_path: Path) -> None:
    """An encoder with a classification head saved as a sentence encoder is served and evaluated
    as one: dispatch reads the record, never guesses from heads or files."""
    tokenizer = SubwordTokenizer.train(["open the file", "close the window"], vocab_size=40)
    model = EncoderOnlyTransformer(preset("minilm-l6", num_encoder_layers=1, d_model=8, d_ff=16, num_heads=2,
                                          vocab_size=tokenizer.vocab_size, labels=["a", "b"]))
    save_model_dir(tmp_path / "m", model, tokenizer, GenerationConfig(), task="sentence-embedding")
    assert model_task(tmp_path / "m") == "sentence-embedding"
    with pytest.raises(ValueError, match="`evaluate` does not apply to this sentence-embedding model"):
        task_function(tmp_path / "m", "evaluate")
    save_model_dir(tmp_path / "c", model, tokenizer, GenerationConfig())  # no task named: the heads imply it
    assert model_task(tmp_path / "c") == "classification"


def test_serve_picks_its_endpoints_from_the_recorded_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    from transformerkit.serve import ENDPOINTS, create_app

    shutil.copytree(BEFORE / "classification", tmp_path / "embedder")
    config = json.loads((tmp_path / "embedder" / "config.json").read_text(encoding="utf-8"))
    (tmp_path / "embedder" / "config.json").write_text(json.dumps({**config, "task": "sentence-embedding"}),
                                                       encoding="utf-8")
    paths = {route.path for route in create_app(tmp_path / "embedder").routes}
    assert "/v1/embeddings" in paths and "/v1/classify" not in paths
    assert set(ENDPOINTS) == set(INFERENCE)  # every task is served
    assert "/v1/generate-images" in {route.path for route in create_app(BEFORE / "image-generation").routes}
    monkeypatch.delitem(ENDPOINTS, "image-generation")  # a task no endpoint serves
    with pytest.raises(ValueError, match=r"no HTTP endpoints serve this kind of model \(task image-generation\)"):
        create_app(BEFORE / "image-generation")


@pytest.mark.parametrize("task, error", [
    ("summarisation", "config.json: task 'summarisation' is not one of translation, summarization"),
    (["translation"], "config.json: task must be a string, got ['translation']"),
])
def test_an_unknown_or_malformed_task_is_one_line_naming_the_file(task: object, error: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(BEFORE / "translation", tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text(encoding="utf-8"))
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "task": task}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="config.json: task"):
        model_task(tmp_path / "m")
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--data", "unused.tsv"]) == 2
    assert error in capsys.readouterr().err


def test_averaging_keeps_the_task(tmp_path: Path) -> None:
    model, tokenizer, generation = load_model_dir(BEFORE / "summarization")
    for name in ("a", "b"):
        save_model_dir(tmp_path / name, model, tokenizer, generation, task="summarization")
    average_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "avg")
    assert read_model_config(tmp_path / "avg").task == "summarization"


def test_every_family_names_its_config_class() -> None:
    """A family reads ``config.json`` into its own class (the RNN baseline will have one)."""
    for model_class in MODEL_CLASSES.values():
        assert model_class.config_class.from_dict(model_class.config_class().to_dict()) == model_class.config_class()


@pytest.mark.parametrize("name, content, error", [
    ("config.json", b"[1, 2]", "config.json: expected a JSON object, got list"),
    ("config.json", b"null", "config.json: expected a JSON object, got NoneType"),
    ("config.json", b"\x83\xff\x00binary", "config.json: not a UTF-8 text file"),
    ("config.json", b'{"model_type": ["x"]}', "config.json: model_type is ['x'], expected one of"),
    ("config.json", b'{"model_type": "transformerkit-encoder-decoder",\n', "config.json: invalid JSON"),
    ("generation_config.json", b'{"beam": 4,\n', "generation_config.json: invalid JSON (Expecting"),
    ("generation_config.json", b'{"beam": "four"}', "generation_config.json: beam"),
    ("generation_config.json", b"[]", "generation_config.json: expected a JSON object, got list"),
])
def test_a_damaged_model_directory_is_one_line_naming_the_file(name: str, content: bytes, error: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(BEFORE / "translation", tmp_path / "m")
    (tmp_path / "m" / name).write_bytes(content)
    (tmp_path / "in.txt").write_text("open the file\n", encoding="utf-8")
    assert main(["translate", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "in.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and error in err and "Traceback" not in err, err
