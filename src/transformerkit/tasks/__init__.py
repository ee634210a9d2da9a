"""The tasks: each is one module and one line of :data:`TASKS`, the only place task names are written.

A task module holds its data section, run class, training task, test scoring and inference
loader, and the command-line verbs that use them. ``cli.py`` finds them through these functions,
which a module may define:

    add_commands(commands)              add its own verbs (``translate``, ``classify``, …)
    serves(model_class, config, dir)    whether a model directory is this module's (to evaluate, plot, serve)
    evaluate(args) -> dict              ``transformerkit evaluate`` for such a directory (scores as JSON)
    plot_attention(args) -> str         ``transformerkit plot-attention`` for it (returns the message)

The table names each run class by module and class, imported on first use, so that training
imports only the task it runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Any

from transformerkit.checkpoint import read_model_config
from transformerkit.training.recipe import RunConfig, read_recipe

TASKS = {
    "translation": "translation:TranslationRun",  # the task of a recipe that names none
    "summarization": "translation:TranslationRun",  # (document, summary) pairs, scored with ROUGE
    "language-modeling": "language_modeling:LanguageModelRun",
    "classification": "classification:ClassificationRun",
    "question-answering": "question_answering:QuestionAnsweringRun",
    "image-classification": "image_classification:ImageClassificationRun",
    "image-generation": "image_generation:ImageGenerationRun",
    "sentence-embedding": "embedding",  # inference only (pretrained encoders): no recipe trains it
}
"""Task name → ``"module:RunClass"`` under ``transformerkit.tasks`` (``"module"`` for a task without training)."""


def task_module(entry: str) -> ModuleType:
    return import_module(f"{__name__}.{entry.partition(':')[0]}")


class RunRegistry(Mapping[str, type[RunConfig[Any]]]):
    """Task name → run class, for the tasks that a recipe trains."""

    def __init__(self, entries: dict[str, str]) -> None:
        self.entries = {task: entry for task, entry in entries.items() if ":" in entry}

    def __getitem__(self, task: str) -> type[RunConfig[Any]]:
        run_class: type[RunConfig[Any]] = getattr(task_module(self.entries[task]), self.entries[task].partition(":")[2])
        return run_class

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


RUNS = RunRegistry(TASKS)


def task_modules() -> list[ModuleType]:
    """Every task module, once each, in table order."""
    return list({entry.partition(":")[0]: task_module(entry) for entry in TASKS.values()}.values())


def serving_modules(model_dir: str | Path) -> list[ModuleType]:
    """The task modules whose ``serves`` claims a model directory, in table order (the first is
    the directory's task)."""
    directory = Path(model_dir)
    model_class, config = read_model_config(directory)
    return [module for module in task_modules()
            if hasattr(module, "serves") and module.serves(model_class, config, directory)]


def serving_module(model_dir: str | Path, function: str) -> Any:
    """``function`` of the first task module that serves a model directory and has it; ValueError
    when none does."""
    for module in serving_modules(model_dir):
        if hasattr(module, function):
            return getattr(module, function)
    model_class, _ = read_model_config(Path(model_dir))
    command = function.replace("_", "-")
    raise ValueError(f"{model_dir}: `{command}` does not apply to this {model_class.model_type} model")


def load_recipe(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig[Any]:
    """A recipe file (or the defaults when ``path`` is None) with ``key=value`` overrides, as the
    run class of its ``task`` (:func:`~transformerkit.training.recipe.read_recipe`)."""
    return read_recipe(path, overrides, RUNS)
