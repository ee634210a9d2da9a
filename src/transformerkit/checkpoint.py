"""Model directories and training checkpoints, written atomically and loaded without pickles.

A **model directory** is what a user moves and shares (Hugging Face's conventions)::

    config.json             the configuration (its family's config class), plus "model_type" (the family) and
                            "task" (what its heads were trained for: Hugging Face's "architectures")
    model.safetensors       the weights (tied matrices stored once)
    tokenizer.json          the Hugging Face tokenizer (text models), or
    preprocessor_config.json  what turns images into inputs (vision and image-generation models)
    generation_config.json  decoding defaults (beam size, length penalty, max length offset)

A **training checkpoint** is a model directory plus ``training_state.pt``: optimizer, schedule,
data position and random-number-generator states, loaded with ``torch.load(weights_only=True)``.

Every directory is first written under a temporary name and then renamed into place, and the
``latest`` / ``best`` pointers are symbolic links replaced with one ``os.replace``: a kill at any
moment leaves the previous checkpoint and pointers intact.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import pickle
import shutil
import sys
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple, Protocol, Union, runtime_checkable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from transformerkit.config import EncoderOnlyConfig, TransformerConfig, VisionConfig, without_other_families_fields
from transformerkit.data.image_processing import (PREPROCESSOR_CONFIG, ImageProcessor, PixelTokenizer,
                                                  load_image_preprocessor)
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.models.families import MODEL_CLASSES, Model
from transformerkit.models.rnn import RNNEncoderDecoder
from transformerkit.models.rnn_language_model import RNNLanguageModel
from transformerkit.models.vision import VisionTransformer
from transformerkit.typed_config import from_mapping

Preprocessor = Union[SubwordTokenizer, ImageProcessor, PixelTokenizer]
"""What turns a model's raw input (text or images) into ids or tensors: saved beside its weights."""
TRAINING_STATE = "training_state.pt"


class CheckpointError(ValueError):
    """A model directory or checkpoint that is missing, incomplete or does not fit the model."""


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; on success it takes ``final``'s place in one
    step (an exchange of the two on Linux, a rename where ``final`` is new), so that ``final`` is
    never missing; a file where ``final`` should be is kept and refused."""
    if final.exists() and not final.is_dir():  # replacing it would lose a file the user did not mean to lose
        raise CheckpointError(f"{final} is a file, not a directory: nothing was written (choose another name)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        for path in tmp.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        if not (final.exists() and exchange_paths(tmp, final)):  # swapped in one step: tmp holds the old one
            if final.exists():  # elsewhere two renames, with a moment between them without ``final``
                os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``, through libc);
    False where the system or file system cannot, and nothing changed."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # a libc older than glibc 2.28
        return False
    at_cwd, rename_exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # not supported here
        return False
    raise OSError(code, os.strerror(code), str(second))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def point(link: Path, target: Path) -> None:
    """Make ``link`` a relative symbolic link to ``target``, atomically."""
    tmp = link.parent / f".{link.name}.tmp-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


class ModelKind(NamedTuple):
    """What a model directory says it is (its ``config.json``)."""

    model_class: type[Model]
    """The family, from ``model_type``."""
    config: TransformerConfig
    task: str
    """What the model does (``task``: ``translation``, ``language-modeling``, …), which decides the
    verbs and endpoints that use it (:data:`transformerkit.inference.INFERENCE`)."""


def implied_task(model_class: type[Model], config: TransformerConfig, preprocessor_file: str,
                 generation: GenerationConfig) -> str:
    """The task that a model's family, heads and preprocessor imply: what a directory written
    before ``config.json`` recorded its task holds, and what a writer that names no task records.
    ``preprocessor_file``: ``tokenizer.json`` or ``preprocessor_config.json``."""
    if model_class in (EncoderDecoderTransformer, RNNEncoderDecoder):
        return generation.task  # translation or summarization: the same model, scored differently
    if model_class is RNNLanguageModel:
        return "language-modeling"
    if model_class is DecoderOnlyTransformer:
        return "image-generation" if preprocessor_file == PREPROCESSOR_CONFIG else "language-modeling"
    if model_class is VisionTransformer:
        return "image-classification"
    if isinstance(config, EncoderOnlyConfig) and config.span_head:
        return "question-answering"
    return "classification" if isinstance(config, EncoderOnlyConfig) and config.labels else "sentence-embedding"


def preprocessor_file(preprocessor: Preprocessor) -> str:
    return "tokenizer.json" if isinstance(preprocessor, SubwordTokenizer) else PREPROCESSOR_CONFIG


def write_model_files(directory: Path, model: Model, tokenizer: Preprocessor,
                      generation: GenerationConfig, task: str | None = None) -> None:
    """Write the four files of a model directory into ``directory`` (which must exist); ``task``
    None records the task the model implies (:func:`implied_task`)."""
    if task is None:
        task = implied_task(type(model), model.config, preprocessor_file(tokenizer), generation)
    config = {"model_type": model.model_type, "task": task, **model.config.to_dict()}
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (directory / "generation_config.json").write_text(json.dumps(asdict(generation), indent=2) + "\n",
                                                      encoding="utf-8")
    save_model(model, str(directory / "model.safetensors"))
    tokenizer.save(directory / preprocessor_file(tokenizer))


def save_model_dir(directory: Path, model: Model, tokenizer: Preprocessor,
                   generation: GenerationConfig, task: str | None = None) -> None:
    with atomic_directory(directory) as tmp:
        write_model_files(tmp, model, tokenizer, generation, task)


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a file that is not UTF-8, not JSON or not an object raises
    :class:`CheckpointError` naming it."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not a UTF-8 text file") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: invalid JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(values).__name__}")
    return values


def read_model_config(directory: Path) -> ModelKind:
    """The family (``model_type``), configuration and task of a model directory; a directory
    written before ``config.json`` recorded the task gets the one its model implies."""
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a model directory (no config.json)")
    values = read_json_object(path)
    model_type = values.pop("model_type", None)
    task = values.pop("task", None)
    if not isinstance(model_type, str) or model_type not in MODEL_CLASSES:
        hint = (" (a Hugging Face checkpoint: import it with `transformerkit convert`)"
                if model_type in ("gpt2", "bert", "vit") else "")
        raise CheckpointError(f"{path}: model_type is {model_type!r}, expected one of "
                              f"{', '.join(map(repr, MODEL_CLASSES))}{hint}")
    model_class = MODEL_CLASSES[model_type]
    try:
        config = model_class.config_class.from_dict(without_other_families_fields(model_class.config_class, values))
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None
    if task is None:
        preprocessor = PREPROCESSOR_CONFIG if (directory / PREPROCESSOR_CONFIG).is_file() else "tokenizer.json"
        task = implied_task(model_class, config, preprocessor, read_generation_config(directory))
    elif not isinstance(task, str):
        raise CheckpointError(f"{path}: task must be a string, got {task!r}")
    return ModelKind(model_class, config, task)


def read_generation_config(directory: Path) -> GenerationConfig:
    """The decoding defaults of a model directory (``generation_config.json``; defaults without one)."""
    path = directory / "generation_config.json"
    if not path.is_file():
        return GenerationConfig()
    values = read_json_object(path)
    try:
        return from_mapping(GenerationConfig, values)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None


class WeightsMismatch(CheckpointError):
    """A complete weights file whose tensors are not the model's (missing, unexpected, mis-shaped)."""


_FLOAT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
"""safetensors' names of the floating-point dtypes weights may be stored as."""


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load ``model.safetensors`` strictly: a file that is not a complete safetensors file raises
    :class:`CheckpointError`, one whose keys, shapes or kinds (integer for floating-point) differ
    from the model's :class:`WeightsMismatch`, weights that are not finite :class:`CheckpointError`;
    weights in another floating-point type are converted, with a warning."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    expected = model.state_dict()  # the model's own tensors: loading fills them in place
    try:
        with safe_open(str(path), framework="pt") as stored:  # checks the header covers the file: a truncated one fails
            dtypes = {key: stored.get_slice(key).get_dtype() for key in stored.keys()}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a complete safetensors file, damaged or truncated ({error})") from None
    integer = sorted(k for k, dtype in dtypes.items() if k in expected and expected[k].is_floating_point()
                     and dtype not in _FLOAT_DTYPES)
    if integer:
        raise WeightsMismatch(f"{path}: {integer[0]} is stored as {dtypes[integer[0]]}, not as floating-point "
                              f"weights{f' (and {len(integer) - 1} more)' if len(integer) > 1 else ''}")
    try:
        load_model(model, str(path), strict=True)
    except (RuntimeError, SafetensorError) as error:
        raise WeightsMismatch(f"{path} does not fit the model: {error}") from None
    converted = {k: dtype for k, dtype in dtypes.items() if k in expected and dtype in _FLOAT_DTYPES
                 and _FLOAT_DTYPES[dtype] != expected[k].dtype}
    if converted:
        key, dtype = next(iter(converted.items()))
        warnings.warn(f"{path}: weights stored as {dtype} ({len(converted)} tensors) were converted to "
                      f"{str(expected[key].dtype).removeprefix('torch.')}", stacklevel=2)
    broken = next((k for k, v in expected.items() if v.is_floating_point() and not v.isfinite().all()), None)
    if broken is not None:
        raise CheckpointError(f"{path}: {broken} holds NaN or infinite values (a diverged run?)")


@runtime_checkable
class ReadsTokens(Protocol):
    """The configuration of a model that reads token ids (every text family's, Transformer or not)."""

    vocab_size: int


def load_preprocessor(directory: Path, config: TransformerConfig) -> Preprocessor:
    """The tokenizer (``tokenizer.json``) or image processor (``preprocessor_config.json``) of a
    model directory, checked against the model's vocabulary or channels."""
    if (directory / "tokenizer.json").is_file():
        preprocessor: Preprocessor = SubwordTokenizer.load(directory / "tokenizer.json")
    elif (directory / PREPROCESSOR_CONFIG).is_file():
        try:
            preprocessor = load_image_preprocessor(directory / PREPROCESSOR_CONFIG)
        except ValueError as error:
            raise CheckpointError(str(error)) from None
    else:
        raise CheckpointError(f"{directory}: no tokenizer.json or {PREPROCESSOR_CONFIG}")
    if isinstance(preprocessor, ImageProcessor):
        channels = config.num_channels if isinstance(config, VisionConfig) else "no"
        if preprocessor.num_channels != channels:
            raise CheckpointError(f"{directory}: the image processor takes {preprocessor.num_channels} channels, "
                                  f"the model {channels}")
    else:
        tokens = config.vocab_size if isinstance(config, ReadsTokens) else "no"
        if preprocessor.vocab_size != tokens:
            raise CheckpointError(f"{directory}: tokenizer has {preprocessor.vocab_size} tokens, the model {tokens}")
    return preprocessor


def load_model_dir(directory: str | Path, device: torch.device | str = "cpu"
                   ) -> tuple[Model, Preprocessor, GenerationConfig]:
    """The model (in eval mode), tokenizer or image processor, and decoding defaults saved in ``directory``."""
    directory = Path(directory)
    model_class, config, _ = read_model_config(directory)
    model = model_class(config)
    load_weights(model, directory / "model.safetensors")
    tokenizer = load_preprocessor(directory, config)
    return model.to(device).eval(), tokenizer, read_generation_config(directory)


def save_checkpoint(directory: Path, model: Model, tokenizer: Preprocessor, generation: GenerationConfig,
                    training_state: dict[str, Any], task: str | None = None) -> None:
    """A model directory plus ``training_state.pt``, atomically; then ``latest`` points at it.
    What killed writers left beside it is removed first; a full disk raises :class:`CheckpointError`
    naming the last complete checkpoint, which stays as it was."""
    remove_stale_temporaries(directory.parent)
    try:
        with atomic_directory(directory) as tmp:
            write_model_files(tmp, model, tokenizer, generation, task)
            torch.save(training_state, tmp / TRAINING_STATE)
    except (OSError, RuntimeError, SafetensorError) as error:
        if not _out_of_space(error):
            raise
        latest = directory.parent / "latest"
        last = latest.resolve().name if latest.exists() else "none yet"
        raise CheckpointError(f"no space left writing checkpoint {directory.name} in {directory.parent}; "
                              f"the last complete checkpoint is {last}") from None
    point(directory.parent / "latest", directory)


def _out_of_space(error: BaseException) -> bool:
    """Whether a failed write ran out of disk: ENOSPC, or how PyTorch's and safetensors' writers
    report a short write."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    return any(sign in str(error) for sign in ("No space left", "os error 28", "unexpected pos"))


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove the ``.NAME.tmp-PID`` and ``.NAME.old-PID`` entries that writers killed mid-write
    (:func:`atomic_directory`, :func:`point`) left in ``directory``; those of running processes stay.
    Returns what was removed."""
    removed = []
    for path in sorted([*directory.glob(".*.tmp-*"), *directory.glob(".*.old-*")]):
        pid = path.name.rpartition("-")[2]
        if not pid.isdigit() or _running(int(pid)):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def load_training_state(directory: Path) -> dict[str, Any]:
    """The optimizer, schedule, progress and RNG states of a checkpoint, unpickled with only plain
    tensors and containers allowed (``weights_only``: nothing in the file is executed); an empty,
    truncated or foreign file raises :class:`CheckpointError` naming it."""
    path = directory / TRAINING_STATE
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {TRAINING_STATE} (not a training checkpoint)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: damaged or not a training state ({reason})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: damaged or not a training state (a {type(state).__name__}, not a mapping)")
    return state


def average_checkpoints(directories: list[Path], out: Path) -> None:
    """Average the weights of several model directories of one architecture (§6.1) into ``out``."""
    if not directories:
        raise CheckpointError("no checkpoints to average")
    model, tokenizer, generation = load_model_dir(directories[0])
    task = read_model_config(directories[0]).task
    total = {k: v.double().clone() for k, v in model.state_dict().items()}
    for directory in directories[1:]:
        other, _, _ = load_model_dir(directory)
        if other.config != model.config:
            raise CheckpointError(f"{directory}: configuration differs from {directories[0]}")
        for key, value in other.state_dict().items():
            total[key] += value.double()
    model.load_state_dict({k: (v / len(directories)).to(model.state_dict()[k].dtype) for k, v in total.items()})
    save_model_dir(out, model, tokenizer, generation, task)
