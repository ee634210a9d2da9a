"""The tasks: each is one module (its data section, run class, training task, test scoring and
inference loader) and one line of :data:`RUNS`, the only place task names are written.

The registry names each run class by module and class so that a command imports only the task
it runs (classification pulls in scikit-learn, the image tasks their processors).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module
from pathlib import Path
from typing import Any

from transformerkit.training.recipe import RunConfig, read_recipe


class TaskRegistry(Mapping[str, type[RunConfig[Any]]]):
    """Task name → run class, each given as ``"module:Class"`` under ``transformerkit.tasks`` and imported on first use."""

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


RUNS = TaskRegistry({
    "translation": "translation:TranslationRun",  # the task of a recipe that names none
    "summarization": "translation:TranslationRun",  # (document, summary) pairs, scored with ROUGE
    "language-modeling": "language_modeling:LanguageModelRun",
    "classification": "classification:ClassificationRun",
    "question-answering": "question_answering:QuestionAnsweringRun",
    "image-classification": "image_classification:ImageClassificationRun",
    "image-generation": "image_generation:ImageGenerationRun",
})


def load_recipe(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig[Any]:
    """A recipe file (or the defaults when ``path`` is None) with ``key=value`` overrides, as the
    run class of its ``task`` (:func:`~transformerkit.training.recipe.read_recipe`)."""
    return read_recipe(path, overrides, RUNS)
