"""Using a trained model: one module per task, each holding the object that turns inputs into
outputs (``Translator``, ``TextGenerator``, ``TextClassifier``, ``QuestionAnswerer``,
``SentenceEncoder``, ``ImageClassifier``, ``ImageGenerator``), its loader from a model directory,
its scores and its command-line verbs. This layer stands on the checkpoint layer and never on
``training``: the server, the inference verbs, export and explain use a model through it.

A model directory's ``config.json`` names its task (:func:`transformerkit.checkpoint.read_model_config`);
:data:`INFERENCE` maps that name to the module that uses such a model. A module may define:

    add_commands(commands)              its verbs (``translate``, ``generate``, ``classify``, …)
    evaluate(args) -> dict              ``transformerkit evaluate`` for its models (scores as JSON)
    plot_attention(args) -> str         ``transformerkit plot-attention`` for its models (the message)
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Any

from transformerkit.checkpoint import CheckpointError, read_model_config

INFERENCE = {
    "translation": "translation",
    "summarization": "translation",  # the same model and Translator, scored with ROUGE
    "language-modeling": "language_modeling",
    "classification": "classification",
    "question-answering": "question_answering",
    "sentence-embedding": "embedding",
    "image-classification": "image_classification",
    "image-generation": "image_generation",
}
"""Task name (``task`` in a model directory's ``config.json``) → module under ``transformerkit.inference``."""


def inference_modules() -> list[ModuleType]:
    """Every inference module, once each, in table order."""
    return [import_module(f"{__name__}.{name}") for name in dict.fromkeys(INFERENCE.values())]


def model_task(model_dir: str | Path) -> str:
    """The task a model directory holds, checked against :data:`INFERENCE`."""
    path = Path(model_dir)
    task = read_model_config(path).task
    if task not in INFERENCE:
        raise CheckpointError(f"{path / 'config.json'}: task {task!r} is not one of {', '.join(INFERENCE)}")
    return task


def task_function(model_dir: str | Path, function: str) -> Callable[[Any], Any]:
    """``function`` of the inference module of a model directory's task; ValueError when that
    module has none (the verb does not apply to such a model)."""
    task = model_task(model_dir)
    module = import_module(f"{__name__}.{INFERENCE[task]}")
    if not hasattr(module, function):
        raise ValueError(f"{model_dir}: `{function.replace('_', '-')}` does not apply to this {task} model")
    found: Callable[[Any], Any] = getattr(module, function)
    return found
