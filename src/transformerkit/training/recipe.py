"""Training recipes: one YAML file says which task, what data, which model, how to train and decode.

    task:      translation     # summarization, language-modeling, classification, question-answering,
                               # image-classification, image-generation
    data:      {train: …, valid: …, test: …, target_lang: de, vocab_size: 8000}
    model:     {preset: small, dropout: 0.1, …}          # any TransformerConfig field
    training:  {max_tokens: 4096, max_minutes: 15, …}    # §5.3–5.4 defaults
    decoding:  {beam: 4, length_penalty: 0.6, …}         # GenerationConfig

The ``data`` section depends on the task (:class:`TranslationData`, :class:`LanguageModelData`,
:class:`ClassificationData`, :class:`QuestionAnsweringData`, :class:`ImageClassificationData`,
:class:`ImageGenerationData`); the other sections are the same for every task.

``transformerkit train RECIPE.yaml --set training.max_steps=100 --set model.preset=tiny`` edits
any key; unknown keys and ill-typed values are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from transformerkit.generation.config import GenerationConfig
from transformerkit.config import PRESETS, TransformerConfig
from transformerkit.typed_config import apply_overrides, from_mapping


@dataclass
class TranslationData:
    train: str = ""
    """Training pairs: TSV (``.tsv``/``.tsv.gz``), JSONL, or a source-side text file with ``train_target``."""
    valid: str | None = None
    test: str | None = None
    train_target: str | None = None
    valid_target: str | None = None
    test_target: str | None = None
    source_field: str = "source"
    target_field: str = "target"
    source_lang: str = "en"
    target_lang: str = "de"
    vocab_size: int = 8000
    """Joint BPE vocabulary size, special tokens included."""
    tokenizer: Literal["bpe", "byte-level"] = "bpe"
    """``bpe``: BPE over characters, words marked by ``▁`` and punctuation split off (SentencePiece's
    Metaspace scheme); ``byte-level``: GPT-2's byte-level BPE, punctuation runs merged with their words."""
    max_length: int = 200
    """Training pairs with a side longer than this many tokens are dropped (and counted)."""
    max_source_tokens: int | None = None
    """Sources are cut to their first this many tokens, in training and wherever the model is used
    (saved with it; Hugging Face's ``max_source_length``): a summarizer reads a document's opening.
    None: whole sources."""
    init_from: str | None = None
    """A transformerkit encoder-only model directory (BERT, MiniLM: ``transformerkit convert``) that
    starts both stacks (BERT2BERT, :func:`~transformerkit.models.encoder_decoder.warm_started_from_encoder`):
    its tokenizer replaces ``tokenizer`` and ``vocab_size``, its architecture replaces ``model``
    except ``dropout``, ``attention_dropout`` and ``label_smoothing``. None: a fresh model and a vocabulary learned on ``train``."""


@dataclass
class LanguageModelData:
    train: str = ""
    """A UTF-8 text file (``.txt`` or ``.txt.gz``); the model learns to continue it."""
    valid: str | None = None
    """Validation text; None takes the last ``valid_fraction`` of ``train`` (a contiguous split)."""
    valid_fraction: float = 0.05
    tokenizer: Literal["char", "bpe", "gpt2"] = "char"
    """``char``: one token per character; ``bpe``: byte-level BPE learned on ``train``;
    ``gpt2``: GPT-2's vocabulary from ``tokenizer_path``."""
    tokenizer_path: str = "data/gpt2-tokenizer"
    vocab_size: int = 4096
    """Vocabulary size of the learned ``bpe`` tokenizer."""
    block_size: int = 256
    """Tokens of context per training sequence."""
    valid_tokens: int | None = 65536
    """Validation scores the first this many tokens of the validation text (None: all of it)."""


@dataclass
class EncoderTaskData:
    """What the encoder tasks' data sections share: where the tokenizer and pretrained weights are."""

    tokenizer: str = ""
    """A directory holding the tokenizer (``tokenizer.json`` or ``vocab.txt``); default: ``init_from``."""
    init_from: str | None = None
    """A transformerkit encoder-only model directory to fine-tune (its config replaces ``model``,
    except the task's head and ``dropout``); None trains from scratch."""


@dataclass
class ClassificationData(EncoderTaskData):
    train: str = ""
    """Labeled texts: CSV/TSV with a header, or JSONL. Without ``valid``/``test`` files the texts
    are split by a hash of the text (``valid_percent``, ``test_percent``)."""
    valid: str | None = None
    test: str | None = None
    text_field: str = "text"
    label_field: str = "label"
    encoding: str = "utf-8"
    valid_percent: float = 10.0
    test_percent: float = 10.0
    max_length: int = 128
    """Tokens per text, [CLS] and [SEP] included; longer texts are cut."""


@dataclass
class QuestionAnsweringData(EncoderTaskData):
    train: str = ""
    """Questions in SQuAD v1.1 JSON format (``valid`` and ``test`` too)."""
    valid: str | None = None
    test: str | None = None
    max_length: int = 384
    """Tokens per model input: [CLS] question [SEP] context window [SEP]."""
    stride: int = 128
    """Context tokens shared by consecutive windows of a long context."""
    max_question_tokens: int = 64
    """Longer questions are cut."""
    max_answer_tokens: int = 30
    """The longest answer span predicted."""


@dataclass
class ImageData:
    """What the image tasks' data sections share (sources: :func:`transformerkit.data.images.load_images`)."""

    train: str = ""
    """An MNIST-layout directory (Fashion-MNIST), a class-folder directory, a pixel CSV, or ``sklearn:digits``."""
    test: str | None = None
    """A separate test source; default: the source's own test split (MNIST layout), else ``test_percent`` of ``train``."""
    valid_percent: float = 10.0
    """Share of the training images held out for validation (by a hash of each image)."""
    test_percent: float = 10.0
    """Share held out for testing when there is no test split."""
    batch_size: int = 128
    """Images per batch."""


@dataclass
class ImageClassificationData(ImageData):
    shift: int = 2
    """Augmentation: move each training image by up to this many pixels in x and y (zero-padded); 0: off."""
    flip: bool = False
    """Augmentation: mirror half the training images left-right (clothes: yes; digits: no)."""


@dataclass
class ImageGenerationData(ImageData):
    image_size: int = 14
    """Generated images are image_size × image_size (the data is area-downsampled to it)."""
    levels: int = 4
    """Grey levels per pixel (the model's pixel vocabulary)."""


@dataclass
class TrainingConfig:
    output_dir: str = "runs/translation"
    max_tokens: int = 4096
    """Tokens per batch: translation counts padded tokens (sentences × longest side), like fairseq's
    --max-tokens; language modeling takes max_tokens // block_size sequences."""
    accumulate: int = 1
    """Batches per optimizer step (gradient accumulation)."""
    max_steps: int | None = None
    max_epochs: int | None = None
    max_minutes: float | None = None
    """Wall-clock budget; training stops at the first step past it (resumed runs count the time before)."""
    warmup_steps: int = 4000
    schedule: Literal["inverse-sqrt", "cosine"] = "inverse-sqrt"
    """``inverse-sqrt``: the paper's (§5.3); ``cosine``: the same warm-up and peak, then a cosine decay
    to 0 at ``max_steps`` (which it needs)."""
    lr_scale: float = 1.0
    """Multiplier on lrate = d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)."""
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-9
    weight_decay: float = 0.0
    clip_norm: float | None = 1.0
    distributed: Literal["ddp", "fsdp"] = "ddp"
    """Under torchrun with several processes: DistributedDataParallel, or FSDP's ``fully_shard``
    (each Transformer layer a shard unit) for models that do not fit one device."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16 runs the forward pass under torch.autocast (weights and optimizer stay fp32)."""
    seed: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    validate_every: int = 1000
    valid_bleu_sentences: int = 300
    """Translation (summarization): validation BLEU and chrF (ROUGE) are computed with greedy
    decoding on this many validation pairs, taken evenly across the validation file (0: off)."""
    save_every: int | None = None
    """Steps between checkpoints (default: ``validate_every``)."""
    keep_checkpoints: int = 5
    average_last: int = 5
    """The final model averages the last N checkpoints' weights (the paper averages 5)."""
    patience: int | None = None
    """Stop after this many validations without a lower validation loss."""
    log_every: int = 50
    tensorboard: bool = True
    progress: bool = True


Task = Literal["translation", "summarization", "language-modeling", "classification", "question-answering",
               "image-classification", "image-generation"]


@dataclass
class RunConfig:
    """A translation run (the default task), or a summarization run: the same sections, with
    (document, summary) pairs as (source, target)."""

    task: Task = "translation"
    data: TranslationData = field(default_factory=TranslationData)
    model: TransformerConfig = field(default_factory=TransformerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    decoding: GenerationConfig = field(default_factory=GenerationConfig)

    def validate(self) -> None:
        self.validate_shared()
        self.validate_vocabulary()
        if self.data.max_source_tokens is not None and self.data.max_source_tokens < 1:
            raise ValueError(f"data.max_source_tokens must be at least 1 or null, got {self.data.max_source_tokens}")

    def validate_vocabulary(self) -> None:
        """The check of a learned vocabulary's size (translation, language modeling)."""
        if self.data.vocab_size < 16:
            raise ValueError(f"data.vocab_size must be at least 16, got {self.data.vocab_size}")

    def validate_shared(self) -> None:
        """The checks every task shares: a training file, the training and decoding sections."""
        if not self.data.train:
            raise ValueError("data.train is required")
        t = self.training
        for name in ("max_tokens", "accumulate", "warmup_steps", "validate_every", "keep_checkpoints",
                     "average_last", "log_every"):
            if getattr(t, name) <= 0:
                raise ValueError(f"training.{name} must be a positive integer, got {getattr(t, name)}")
        for name in ("max_steps", "max_epochs", "max_minutes", "save_every", "patience", "clip_norm"):
            value = getattr(t, name)
            if value is not None and value <= 0:
                raise ValueError(f"training.{name} must be positive or null, got {value}")
        if t.schedule == "cosine" and t.max_steps is None:
            raise ValueError("training.schedule cosine decays to 0 at training.max_steps: set it")
        if t.max_steps is None and t.max_epochs is None and t.max_minutes is None:
            raise ValueError("set at least one of training.max_steps, training.max_epochs, training.max_minutes")
        try:
            self.decoding.validate()
        except ValueError as error:
            raise ValueError(f"decoding.{error}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class LanguageModelRun(RunConfig):
    """A language-modeling run: the same sections, a different ``data``."""

    task: Task = "language-modeling"
    data: LanguageModelData = field(default_factory=LanguageModelData)  # type: ignore[assignment]

    def validate(self) -> None:
        self.validate_shared()
        self.validate_vocabulary()
        if self.data.block_size < 1:
            raise ValueError(f"data.block_size must be positive, got {self.data.block_size}")
        if self.data.block_size > self.training.max_tokens:
            raise ValueError(f"training.max_tokens ({self.training.max_tokens}) must hold at least one "
                             f"block of data.block_size ({self.data.block_size}) tokens")
        if not 0 < self.data.valid_fraction < 1:
            raise ValueError(f"data.valid_fraction must be in (0, 1), got {self.data.valid_fraction}")


class EncoderTaskRun(RunConfig):
    """A run that trains or fine-tunes an encoder-only model with a task head."""

    def validate_encoder_task(self) -> None:
        self.validate_shared()
        if not (self.data.tokenizer or self.data.init_from):  # type: ignore[attr-defined]
            raise ValueError("set data.tokenizer (a directory with tokenizer.json or vocab.txt) or data.init_from")


@dataclass
class ClassificationRun(EncoderTaskRun):
    """A sequence-classification run (an encoder-only model with a classification head)."""

    task: Task = "classification"
    data: ClassificationData = field(default_factory=ClassificationData)  # type: ignore[assignment]

    def validate(self) -> None:
        self.validate_encoder_task()
        if self.data.max_length < 2:
            raise ValueError(f"data.max_length must be at least 2, got {self.data.max_length}")
        if not 0 <= self.data.valid_percent + self.data.test_percent < 100:
            raise ValueError("data.valid_percent + data.test_percent must be in [0, 100)")


@dataclass
class QuestionAnsweringRun(EncoderTaskRun):
    """An extractive question-answering run (an encoder-only model with a span head)."""

    task: Task = "question-answering"
    data: QuestionAnsweringData = field(default_factory=QuestionAnsweringData)  # type: ignore[assignment]

    def validate(self) -> None:
        self.validate_encoder_task()
        d = self.data
        for name in ("max_length", "max_question_tokens", "max_answer_tokens"):
            if getattr(d, name) < 1:
                raise ValueError(f"data.{name} must be a positive integer, got {getattr(d, name)}")
        if not 0 <= d.stride < d.max_length - 4:
            raise ValueError(f"data.stride ({d.stride}) must be in [0, max_length - 4): a window holds "
                             "[CLS] question [SEP] context [SEP] and moves on by max_length - question - 3 - stride")


class ImageRun(RunConfig):
    """A run on labeled images."""

    def validate_images(self) -> None:
        self.validate_shared()
        d = self.data
        if d.batch_size < 1:  # type: ignore[attr-defined]
            raise ValueError(f"data.batch_size must be a positive integer, got {d.batch_size}")  # type: ignore[attr-defined]
        if not 0 <= d.valid_percent + d.test_percent < 100:  # type: ignore[attr-defined]
            raise ValueError("data.valid_percent + data.test_percent must be in [0, 100)")


@dataclass
class ImageClassificationRun(ImageRun):
    """Image classification with a vision Transformer (``model.preset: vit-28`` or any ``vit-*``)."""

    task: Task = "image-classification"
    data: ImageClassificationData = field(default_factory=ImageClassificationData)  # type: ignore[assignment]

    def validate(self) -> None:
        self.validate_images()
        if not self.model.image_size:
            raise ValueError("model.image_size is 0: image classification needs a vision model (model.preset: vit-…)")
        if self.data.shift < 0:
            raise ValueError(f"data.shift must be 0 or positive, got {self.data.shift}")


@dataclass
class ImageGenerationRun(ImageRun):
    """A class-conditional autoregressive image model: a decoder-only Transformer over pixel tokens."""

    task: Task = "image-generation"
    data: ImageGenerationData = field(default_factory=ImageGenerationData)  # type: ignore[assignment]

    def validate(self) -> None:
        self.validate_images()
        if self.data.image_size < 1 or not 2 <= self.data.levels <= 256:
            raise ValueError(f"data.image_size must be positive and data.levels in [2, 256], got "
                             f"{self.data.image_size} and {self.data.levels}")


RUN_CLASSES: dict[str, type[RunConfig]] = {"translation": RunConfig, "summarization": RunConfig,
                                           "language-modeling": LanguageModelRun, "classification": ClassificationRun,
                                           "question-answering": QuestionAnsweringRun,
                                           "image-classification": ImageClassificationRun,
                                           "image-generation": ImageGenerationRun}


class RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-9`` is a number (YAML 1.1 wants ``1.0e-9``,
    and PyYAML would read ``1e-9`` as the string "1e-9")."""


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                 |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                 |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                 |[-+]?\.(?:inf|Inf|INF)
                 |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def resolve_model_section(values: dict[str, Any]) -> dict[str, Any]:
    """Expand ``model.preset`` into the preset's fields (explicit keys win)."""
    model = dict(values.get("model") or {})
    name = model.pop("preset", None)
    if name is not None:
        if name not in PRESETS:
            raise ValueError(f"model.preset: unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        model = {**PRESETS[name], **model}
    return {**values, "model": model}


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:  # type: ignore[assignment]
    """Read a YAML recipe (or start from defaults when ``path`` is None) and apply ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such recipe file")
        try:
            values = yaml.load(path.read_text(encoding="utf-8"), Loader=RecipeLoader) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: invalid YAML ({error})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a recipe must be a mapping of sections")
    special = {"model.preset", "task"}  # applied before the others: they decide what the others mean
    early = [p for p in overrides if p.split("=", 1)[0].strip() in special]
    for pair in early:
        key, _, value = (part.strip() for part in pair.partition("="))
        if key == "task":
            values["task"] = value
        else:  # a preset chosen on the command line replaces the recipe's
            values.setdefault("model", {})["preset"] = value
    task = values.get("task", "translation")
    if task not in RUN_CLASSES:
        raise ValueError(f"task: unknown task {task!r}; choose from {', '.join(RUN_CLASSES)}")
    run_class = RUN_CLASSES[task]
    values = resolve_model_section(values)
    values = apply_overrides(values, run_class, [p for p in overrides if p not in early])
    run = from_mapping(run_class, values)
    run.validate()
    return run
