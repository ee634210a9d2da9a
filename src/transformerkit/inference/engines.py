"""Exports run by another engine — CTranslate2 (``transformerkit export --format ctranslate2``) —
behind the objects the commands and the server already use: ``--backend ctranslate2`` gives
:class:`~transformerkit.inference.translation.CTranslate2Translator` in place of a ``Translator``
and :class:`~transformerkit.inference.language_modeling.CTranslate2Generator` in place of a
``TextGenerator``. What those need besides CTranslate2's own files the export writes beside
them: our ``tokenizer.json``, ``generation_config.json`` and the model's task, added to
CTranslate2's ``config.json`` under :data:`TASK_KEY`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from transformerkit.checkpoint import CheckpointError, read_generation_config
from transformerkit.commands import UsageError
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig

CTRANSLATE2_MODEL = "model.bin"
TASK_KEY = "transformerkit_task"
"""The key of a CTranslate2 export's ``config.json`` that names the model's task."""
ENGINE_CLASSES = {"Translator": ("translation", "summarization"), "Generator": ("language-modeling",),
                  "Encoder": ("sentence-embedding", "classification", "question-answering")}
"""CTranslate2 class → the tasks whose exports it runs."""


def is_ctranslate2_export(directory: str | Path) -> bool:
    return (Path(directory) / CTRANSLATE2_MODEL).is_file()


def ctranslate2_task(directory: str | Path) -> str | None:
    """The task recorded in a CTranslate2 export (None: an export written before tasks were recorded)."""
    path = Path(directory) / "config.json"
    try:
        task = json.loads(path.read_text(encoding="utf-8")).get(TASK_KEY)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise CheckpointError(f"{path}: not a readable CTranslate2 config") from None
    return task if isinstance(task, str) else None


@dataclass
class CTranslate2Export:
    """A loaded CTranslate2 export: the engine object, our tokenizer and decoding defaults."""

    engine: Any
    tokenizer: SubwordTokenizer
    generation: GenerationConfig


def load_ctranslate2_export(directory: str | Path, engine_class: str) -> CTranslate2Export:
    """The export in ``directory`` on a ``ctranslate2.<engine_class>`` (``Translator``,
    ``Generator``, ``Encoder``), running on as many threads as PyTorch; an export of another kind
    of model, or a missing package, is one line."""
    directory = Path(directory)
    if not is_ctranslate2_export(directory):
        raise CheckpointError(f"{directory}: not a CTranslate2 export (no {CTRANSLATE2_MODEL}; write one with "
                              f"transformerkit export --format ctranslate2)")
    task = ctranslate2_task(directory)
    if task is not None and task not in ENGINE_CLASSES[engine_class]:
        raise CheckpointError(f"{directory}: a CTranslate2 export of a {task} model, not of a "
                              f"{' or '.join(ENGINE_CLASSES[engine_class])} model")
    try:
        import ctranslate2
    except ImportError:
        raise UsageError("--backend ctranslate2 needs its package: pip install ctranslate2") from None
    try:
        engine = getattr(ctranslate2, engine_class)(str(directory), device="cpu",
                                                    intra_threads=torch.get_num_threads())
    except (RuntimeError, ValueError) as error:  # e.g. a decoder-only model.bin given to a Translator
        raise CheckpointError(f"{directory}: CTranslate2 cannot load it as a {engine_class} ({error})") from None
    return CTranslate2Export(engine, SubwordTokenizer.load(directory / "tokenizer.json"),
                             read_generation_config(directory))
