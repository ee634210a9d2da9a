"""Training the tasks: each is one module and one line of :data:`TASKS`.

A task module holds its data section, run class and training task (batches, loss, validation and
test scores); what uses the trained model (loader, verbs, scores) is the task's module in
:mod:`transformerkit.inference`, the one the model directory's recorded task names.

The table names each run class by module and class, imported on first use, so that training
imports only the task it runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module
from pathlib import Path
from typing import Any

from transformerkit.training.recipe import RunConfig, read_recipe

TASKS = {
    "translation": "translation:TranslationRun",  # the task of a recipe that names none
    "summarization": "translation:TranslationRun",  # (document, summary) pairs, scored with ROUGE
    "language-modeling": "language_modeling:LanguageModelRun",
    "classification": "classification:ClassificationRun",
    "question-answering": "question_answering:QuestionAnsweringRun",
    "image-classification": "image_classification:ImageClassificationRun",
    "image-generation": "image_generation:ImageGenerationRun",
}
"""Task name → ``"module:RunClass"`` under ``transformerkit.tasks`` (the names of
:data:`transformerkit.inference.INFERENCE`, less those no recipe trains: sentence embedding)."""


class RunRegistry(Mapping[str, type[RunConfig[Any]]]):
    """Task name → run class, for the tasks that a recipe trains."""

    def __init__(self, entries: dict[str, str]) -> None:
        self.entries = entries

    def __getitem__(self, task: str) -> type[RunConfig[Any]]:
        module, _, name = self.entries[task].partition(":")
        run_class: type[RunConfig[Any]] = getattr(import_module(f"{__name__}.{module}"), name)
        return run_class

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


RUNS = RunRegistry(TASKS)


def load_recipe(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig[Any]:
    """A recipe file (or the defaults when ``path`` is None) with ``key=value`` overrides, as the
    run class of its ``task`` (:func:`~transformerkit.training.recipe.read_recipe`)."""
    return read_recipe(path, overrides, RUNS)
