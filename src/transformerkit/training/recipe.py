"""Training recipes: one YAML file says which task, what data, which model, how to train and decode.

    task:      translation     # any task of the registry (``transformerkit.tasks.RUNS``)
    data:      {train: …, valid: …, test: …, target_lang: de, vocab_size: 8000}
    model:     {preset: small, dropout: 0.1, …}          # the family's config fields (family: … or a preset's)
    training:  {max_tokens: 4096, max_minutes: 15, …}    # §5.3–5.4 defaults
    decoding:  {beam: 4, length_penalty: 0.6, …}         # GenerationConfig

The ``data`` section is the task's own (each task module defines it and a :class:`RunConfig`
subclass with its checks and its :class:`~transformerkit.training.task.TrainingTask`); the other
sections are the same for every task. :func:`read_recipe` builds the run class the recipe's
``task`` names in a registry it is given — training knows no task by name.

The ``model`` section is read into the configuration class of a model family: the one
``model.family`` names (``encoder-decoder``, ``decoder-only``, ``encoder-only``, ``vit`` or a
family registered in :data:`transformerkit.models.families.FAMILIES`), else the preset's, else the
task's (its run class's ``model`` annotation, which also lists the families the task trains).

``transformerkit train RECIPE.yaml --set training.max_steps=100 --set model.preset=tiny`` edits
any key; unknown keys and ill-typed values are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar, get_type_hints

import torch
import yaml

from transformerkit.config import FLAT_CONFIG_FIELDS, PRESETS, TransformerConfig, without_other_families_fields
from transformerkit.generation.config import GenerationConfig
from transformerkit.models.families import FAMILIES
from transformerkit.training.task import TrainingTask
from transformerkit.typed_config import apply_overrides, from_mapping, union_members


@dataclass
class TrainingConfig:
    output_dir: str = "runs/translation"
    max_tokens: int = 4096
    """The training batch budget (fairseq's ``--max-tokens``), in padded positions per batch
    (sequences × the longest in the batch) where a task batches by size
    (:func:`~transformerkit.data.batching.batch_by_size`): translation and summarization count a
    pair's longer side, classification a text's tokens, question answering a window's tokens;
    language modeling takes max_tokens // block_size blocks; the image tasks take
    ``data.batch_size`` images instead. Decoding has budgets of its own (``Translator.batch_tokens``)."""
    accumulate: int = 1
    """Batches per optimizer step (gradient accumulation)."""
    max_steps: int | None = None
    max_epochs: int | None = None
    max_minutes: float | None = None
    """Wall-clock budget; training stops at the first step past it (resumed runs count the time before)."""
    warmup_steps: int = 4000
    warmup_share: float | None = None
    """Size the warm-up to the run: at most this share of the steps the run will take
    (``max_steps``, or the steps ``max_minutes`` holds at the speed of the model's own training
    step, timed before the first), never more than ``warmup_steps``, whose peak lrate stays.
    (Measured on en→de at ~880 steps: 0.3 loses 1.1 BLEU to the full 800-step warm-up; RESULTS.md.)"""
    schedule: Literal["inverse-sqrt", "cosine"] = "inverse-sqrt"
    """``inverse-sqrt``: the paper's (§5.3); ``cosine``: the same warm-up and peak, then a cosine decay
    to 0 at ``max_steps`` or, without it, at the step the run's own speed reaches at ``max_minutes``
    (measured over the warm-up, kept in the checkpoint; training stops there)."""
    lr_scale: float = 1.0
    """Multiplier on lrate = d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)."""
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-9
    weight_decay: float = 0.0
    clip_norm: float | None = 1.0
    distributed: Literal["ddp", "fsdp"] = "ddp"
    """Under torchrun with several processes: DistributedDataParallel, or FSDP's ``fully_shard``
    (each Transformer layer a shard unit) for models that do not fit one device."""
    precision: Literal["auto", "fp32", "bf16"] = "fp32"
    """bf16 runs the forward pass under torch.autocast (weights and optimizer stay fp32). ``auto``
    (every shipped recipe): bf16 where the processor multiplies bf16 in hardware (AMX,
    AVX512-BF16) and this model's own training step measures faster in it, else fp32; measured
    once per machine and shape (:func:`~transformerkit.backends.calibration.choose_precision`),
    kept in the run's checkpoints. On a GPU ``auto`` means bf16 where the GPU supports it."""
    seed: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    validate_every: int = 1000
    valid_bleu_sentences: int = 300
    """Translation (summarization): validation BLEU and chrF (ROUGE) are computed with greedy
    decoding on this many validation pairs, taken evenly across the validation file (0: off)."""
    save_every: int | None = None
    """Steps between checkpoints (default: ``validate_every``)."""
    save_share: float | None = None
    """Size the checkpoint interval to the run: a checkpoint every this share of the steps the run
    will take (planned as for ``warmup_share``), at most every ``save_every`` steps — so that the
    last ``average_last`` checkpoints, which the final model averages, cover the end of the run on
    a slow CPU as on a fast one."""
    keep_checkpoints: int = 5
    average_last: int = 5
    """The final model averages the last N checkpoints' weights (the paper averages 5)."""
    patience: int | None = None
    """Stop after this many validations without a lower validation loss."""
    log_every: int = 50
    tensorboard: bool = True
    progress: bool = True


class DataSection(Protocol):
    """What a task's ``data`` section is: a dataclass with at least a training source, that checks itself."""

    train: str

    def validate(self, run: RunConfig[Any]) -> None:
        """Raise ``ValueError`` naming the first ``data.…`` setting out of range (``run``: for checks across sections)."""


DataT = TypeVar("DataT", bound=DataSection)


@dataclass
class RunConfig(Generic[DataT]):
    """The sections every run has. A task's run class binds its ``data`` section to its training
    task, and its ``model`` section to the configuration classes of the families it trains (the
    first is the default):

        @dataclass
        class TranslationRun(RunConfig[TranslationData]):
            data: TranslationData = field(default_factory=TranslationData)
            model: EncoderDecoderConfig = field(default_factory=EncoderDecoderConfig)
            task_class = TranslationTask
    """

    data: DataT
    task: str = ""
    """The registry name the recipe gave (several tasks may share a run class, e.g. translation and summarization)."""
    model: TransformerConfig = field(default_factory=TransformerConfig)
    """The configuration of the model family trained (each task's run class narrows the type)."""
    training: TrainingConfig = field(default_factory=TrainingConfig)
    decoding: GenerationConfig = field(default_factory=GenerationConfig)

    task_class: ClassVar[Callable[..., TrainingTask]]
    """Builds the task from (run, output directory, resume, device)."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that is out of range."""
        self.validate_shared()
        self.data.validate(self)

    def training_task(self, out: Path, resume: bool, device: torch.device) -> TrainingTask:
        """The task's data, tokenizer, model, loss and metrics for the trainer (``out``: the run's directory)."""
        return type(self).task_class(self, out, resume, device)

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
            if value is not None and not 0 < value < math.inf:  # NaN fails too
                raise ValueError(f"training.{name} must be positive or null, got {value}")
        for name in ("warmup_share", "save_share"):
            share = getattr(t, name)
            if share is not None and not 0 < share <= 1:  # NaN fails too
                raise ValueError(f"training.{name} must be in (0, 1] or null, got {share}")
            if share is not None and t.max_steps is None and t.max_minutes is None:
                raise ValueError(f"training.{name} is a share of training.max_steps or of the steps "
                                 f"training.max_minutes holds: set one")
        if not 0 < t.lr_scale < math.inf or not 0 < t.adam_eps < math.inf:
            raise ValueError(f"training.lr_scale and training.adam_eps must be positive numbers, got "
                             f"{t.lr_scale} and {t.adam_eps}")
        if not 0 <= t.weight_decay < math.inf:
            raise ValueError(f"training.weight_decay must be 0 or positive, got {t.weight_decay}")
        if len(t.adam_betas) != 2 or not all(0 <= beta < 1 for beta in t.adam_betas):
            raise ValueError(f"training.adam_betas must be two numbers in [0, 1), got {list(t.adam_betas)}")
        if t.schedule == "cosine" and t.max_steps is None and t.max_minutes is None:
            raise ValueError("training.schedule cosine decays to 0 at training.max_steps, or at the step "
                             "training.max_minutes allows: set one")
        if t.max_steps is None and t.max_epochs is None and t.max_minutes is None:
            raise ValueError("set at least one of training.max_steps, training.max_epochs, training.max_minutes")
        try:
            self.decoding.validate()
        except ValueError as error:
            raise ValueError(f"decoding.{error}") from None

    def to_dict(self) -> dict[str, Any]:
        """The sections as plain values, ``task`` first and ``model.family`` named (as recipes write them)."""
        values = dataclasses.asdict(self)
        values["model"] = {"family": self.model.family, **values["model"]}
        return {"task": values.pop("task"), **values}


MAX_VOCABULARY = 1 << 21
"""The largest vocabulary a recipe may ask the BPE trainer for (2,097,152; the largest in use are
~256k): its tables are allocated up front, and a mistyped 10⁹ would abort the process."""


def validate_vocabulary_size(vocab_size: int) -> None:
    """The check of a vocabulary learned on the training data (translation, language modeling)."""
    if not 16 <= vocab_size <= MAX_VOCABULARY:
        raise ValueError(f"data.vocab_size must be in [16, {MAX_VOCABULARY:,}], got {vocab_size:,}")


class RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-9`` is a number (YAML 1.1 wants ``1.0e-9``,
    and PyYAML would read ``1e-9`` as the string "1e-9")."""


def _mapping_without_duplicate_keys(loader: RecipeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    """A YAML mapping, refusing a key written twice (PyYAML would keep the last silently)."""
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        except TypeError:  # an unhashable key: construct_mapping reports it
            pass
    return loader.construct_mapping(node)


RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicate_keys)
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                 |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                 |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                 |[-+]?\.(?:inf|Inf|INF)
                 |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def model_section(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of a recipe's ``model`` section (empty when absent or blank); ``ValueError`` when it is
    not a mapping."""
    model = values.get("model") or {}
    if not isinstance(model, dict):
        raise ValueError(f"model must be a mapping of settings (preset: …, d_model: …), got {type(model).__name__}")
    return dict(model)


def model_config_class(model: dict[str, Any], run_class: type[RunConfig[Any]], task: str
                       ) -> tuple[type[TransformerConfig], dict[str, Any]]:
    """The configuration class a recipe's ``model`` section is read into and the section's fields:
    ``family`` names it, else ``preset`` (whose fields go under the explicit keys), else it is the
    task's default; ``ValueError`` for a family or preset the task does not train."""
    trained = union_members(get_type_hints(run_class)["model"])
    model = dict(model)
    family = model.pop("family", None)
    name = model.pop("preset", None)
    config_class = trained[0]
    if family is not None:
        if not isinstance(family, str) or family not in FAMILIES:
            raise ValueError(f"model.family: unknown family {family!r}; choose from {', '.join(FAMILIES)}")
        config_class = FAMILIES[family].config_class
    if name is not None:
        if not isinstance(name, str) or name not in PRESETS:
            raise ValueError(f"model.preset: unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        preset = PRESETS[name]
        if family is not None and type(preset) is not config_class:
            raise ValueError(f"model.preset: {name} is a {preset.family} preset, model.family is {family}")
        config_class, model = type(preset), {**preset.to_dict(), **model}
    if FLAT_CONFIG_FIELDS <= set(model):  # a run.yaml written while one flat configuration served every family
        model = without_other_families_fields(config_class, model)
    if config_class not in trained:
        presets = [n for n, p in PRESETS.items() if type(p) in trained]
        raise ValueError(f"model: the {task} task trains {' or '.join(c.family for c in trained)} models, not "
                         f"{config_class.family} (presets: {', '.join(presets)})")
    return config_class, model


def read_recipe(path: str | Path | None, overrides: list[str] | tuple[str, ...],
                runs: Mapping[str, type[RunConfig[Any]]]) -> RunConfig[Any]:
    """Read a YAML recipe (or start from defaults when ``path`` is None), apply ``key=value``
    overrides, and build the run class ``runs`` holds for its ``task`` (default: the first)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such recipe file")
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data[:error.start].count(b"\n") + 1
            raise ValueError(f"{path}: line {line} is not UTF-8 text (byte {data[error.start:error.start + 1]!r})"
                             ) from None
        try:
            values = yaml.load(text, Loader=RecipeLoader) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: invalid YAML ({' '.join(str(error).split())})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a recipe must be a mapping of sections")
    special = {"model.family", "model.preset", "task"}  # applied first: they decide what the others mean
    early = [p for p in overrides if p.split("=", 1)[0].strip() in special]
    for pair in early:
        key, _, value = (part.strip() for part in pair.partition("="))
        if key == "task":
            values["task"] = value
        else:  # a family or preset chosen on the command line replaces the recipe's
            section = model_section(values)
            kept = [k for k in section if k not in ("family", "preset")]
            if key == "model.preset" and kept:
                warnings.warn(f"--set model.preset={value}: the recipe's model fields {', '.join(kept)} still apply "
                              f"over the preset's (set them too, or use a recipe without them)", stacklevel=2)
            values["model"] = {**section, key.removeprefix("model."): value}
    task = values.setdefault("task", next(iter(runs)))
    if not isinstance(task, str) or task not in runs:
        raise ValueError(f"task: unknown task {task!r}; choose from {', '.join(runs)}")
    run_class = runs[task]
    config_class, model = model_config_class(model_section(values), run_class, task)
    later = [p for p in overrides if p not in early]
    model = apply_overrides(model, config_class, [p for p in later if p.startswith("model.")], prefix="model.")
    values["model"] = from_mapping(config_class, model, "model.")
    values = apply_overrides(values, run_class, [p for p in later if not p.startswith("model.")])
    run = from_mapping(run_class, values)
    run.validate()
    return run
