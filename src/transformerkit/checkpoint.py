"""Model directories and training checkpoints, written atomically and loaded without pickles.

A **model directory** is what a user moves and shares (Hugging Face's conventions)::

    config.json             the TransformerConfig, plus "model_type" (which model family)
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
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from transformerkit.config import TransformerConfig
from transformerkit.data.image_processing import (PREPROCESSOR_CONFIG, ImageProcessor, PixelTokenizer,
                                                  load_image_preprocessor)
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.models.families import MODEL_CLASSES, Model
from transformerkit.typed_config import from_mapping

Preprocessor = Union[SubwordTokenizer, ImageProcessor, PixelTokenizer]
"""What turns a model's raw input (text or images) into ids or tensors: saved beside its weights."""
TRAINING_STATE = "training_state.pt"


class CheckpointError(ValueError):
    """A model directory or checkpoint that is missing, incomplete or does not fit the model."""


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; on success it replaces ``final`` in one rename."""
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
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def write_model_files(directory: Path, model: Model, tokenizer: Preprocessor,
                      generation: GenerationConfig) -> None:
    """Write the four files of a model directory into ``directory`` (which must exist)."""
    config = {"model_type": model.model_type, **model.config.to_dict()}
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (directory / "generation_config.json").write_text(json.dumps(asdict(generation), indent=2) + "\n",
                                                      encoding="utf-8")
    save_model(model, str(directory / "model.safetensors"))
    tokenizer.save(directory / ("tokenizer.json" if isinstance(tokenizer, SubwordTokenizer) else PREPROCESSOR_CONFIG))


def save_model_dir(directory: Path, model: Model, tokenizer: Preprocessor,
                   generation: GenerationConfig) -> None:
    with atomic_directory(directory) as tmp:
        write_model_files(tmp, model, tokenizer, generation)


def read_model_config(directory: Path) -> tuple[type[Model], TransformerConfig]:
    """The model class (from ``model_type``) and configuration of a model directory."""
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a model directory (no config.json)")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: invalid JSON ({error.msg})") from None
    model_type = values.pop("model_type", None)
    if model_type not in MODEL_CLASSES:
        hint = (" (a Hugging Face checkpoint: import it with `transformerkit convert`)"
                if model_type in ("gpt2", "bert") else "")
        raise CheckpointError(f"{path}: model_type is {model_type!r}, expected one of "
                              f"{', '.join(map(repr, MODEL_CLASSES))}{hint}")
    try:
        return MODEL_CLASSES[model_type], TransformerConfig.from_dict(values)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load ``model.safetensors`` strictly; missing, unexpected or mis-shaped keys raise :class:`CheckpointError`."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        load_model(model, str(path), strict=True)
    except (RuntimeError, SafetensorError) as error:
        raise CheckpointError(f"{path} does not fit the model: {error}") from None


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
        if preprocessor.num_channels != config.num_channels:
            raise CheckpointError(f"{directory}: the image processor takes {preprocessor.num_channels} channels, "
                                  f"the model {config.num_channels}")
    elif preprocessor.vocab_size != config.vocab_size:
        raise CheckpointError(f"{directory}: tokenizer has {preprocessor.vocab_size} tokens, "
                              f"the model {config.vocab_size}")
    return preprocessor


def load_model_dir(directory: str | Path, device: torch.device | str = "cpu"
                   ) -> tuple[Model, Preprocessor, GenerationConfig]:
    """The model (in eval mode), tokenizer or image processor, and decoding defaults saved in ``directory``."""
    directory = Path(directory)
    model_class, config = read_model_config(directory)
    model = model_class(config)
    load_weights(model, directory / "model.safetensors")
    tokenizer = load_preprocessor(directory, config)
    generation_path = directory / "generation_config.json"
    generation = GenerationConfig()
    if generation_path.is_file():
        generation = from_mapping(GenerationConfig, json.loads(generation_path.read_text(encoding="utf-8")))
    return model.to(device).eval(), tokenizer, generation


def save_checkpoint(directory: Path, model: Model, tokenizer: Preprocessor,
                    generation: GenerationConfig, training_state: dict[str, Any]) -> None:
    """A model directory plus ``training_state.pt``, atomically; then ``latest`` points at it."""
    with atomic_directory(directory) as tmp:
        write_model_files(tmp, model, tokenizer, generation)
        torch.save(training_state, tmp / TRAINING_STATE)
    point(directory.parent / "latest", directory)


def load_training_state(directory: Path) -> dict[str, Any]:
    path = directory / TRAINING_STATE
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {TRAINING_STATE} (not a training checkpoint)")
    return torch.load(path, map_location="cpu", weights_only=True)


def average_checkpoints(directories: list[Path], out: Path) -> None:
    """Average the weights of several model directories of one architecture (§6.1) into ``out``."""
    if not directories:
        raise CheckpointError("no checkpoints to average")
    model, tokenizer, generation = load_model_dir(directories[0])
    total = {k: v.double().clone() for k, v in model.state_dict().items()}
    for directory in directories[1:]:
        other, _, _ = load_model_dir(directory)
        if other.config != model.config:
            raise CheckpointError(f"{directory}: configuration differs from {directories[0]}")
        for key, value in other.state_dict().items():
            total[key] += value.double()
    model.load_state_dict({k: (v / len(directories)).to(model.state_dict()[k].dtype) for k, v in total.items()})
    save_model_dir(out, model, tokenizer, generation)
