"""Extractive question answering data in SQuAD v1.1's JSON format, and SQuAD's official scores.

The format (Rajpurkar et al., 2016)::

    {"version": "1.1", "data": [{"title": …, "paragraphs": [{"context": …, "qas": [
        {"id": …, "question": …, "answers": [{"text": …, "answer_start": character offset}, …]}]}]}]}

Every answer must be the substring of its context at ``answer_start``; a file where one is not is
rejected with the question's id, since training would learn a wrong span.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Answer:
    text: str
    start: int
    """Character offset of ``text`` in the context."""


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list[Answer] = field(default_factory=list)
    title: str = ""


def load_squad(path: str | Path) -> list[QAExample]:
    """The questions of a SQuAD-format JSON file, in file order."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a SQuAD JSON file ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise ValueError(f"{path}: not a SQuAD JSON file (no top-level \"data\" list)")
    examples = []
    try:
        for article in document["data"]:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    answers = [Answer(a["text"], int(a["answer_start"])) for a in qa.get("answers", [])]
                    for answer in answers:
                        if context[answer.start:answer.start + len(answer.text)] != answer.text:
                            raise ValueError(f"{path}: question {qa['id']!r}: answer {answer.text!r} is not the "
                                             f"context's text at answer_start {answer.start}")
                    examples.append(QAExample(str(qa["id"]), qa["question"], context, answers,
                                              article.get("title", "")))
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a SQuAD JSON file (missing or malformed field {error})") from None
    ids = Counter(e.id for e in examples)
    duplicated = sorted(i for i, n in ids.items() if n > 1)
    if duplicated:
        raise ValueError(f"{path}: duplicated question ids {duplicated[:5]}")
    return examples


def save_squad(examples: list[QAExample], path: str | Path) -> None:
    """Write ``examples`` as SQuAD v1.1 JSON (one paragraph per distinct context, grouped by title)."""
    articles: dict[str, dict[str, dict[str, Any]]] = {}
    for e in examples:
        paragraphs = articles.setdefault(e.title, {})
        paragraph = paragraphs.setdefault(e.context, {"context": e.context, "qas": []})
        paragraph["qas"].append({"id": e.id, "question": e.question,
                                 "answers": [{"text": a.text, "answer_start": a.start} for a in e.answers]})
    data = [{"title": title, "paragraphs": list(paragraphs.values())} for title, paragraphs in articles.items()]
    Path(path).write_text(json.dumps({"version": "1.1", "data": data}, ensure_ascii=False) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------ SQuAD v1.1's official scores
def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalization: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def token_f1(prediction: str, truth: str) -> float:
    """F1 of the bags of normalized words of ``prediction`` and ``truth``."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(truth).split()
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], examples: list[QAExample]) -> dict[str, float]:
    """``exact_match`` and ``f1`` in percent, each the best over a question's answers, averaged over
    every question (one without a prediction scores 0), as SQuAD v1.1's evaluation script computes them."""
    if not examples:
        return {"exact_match": 0.0, "f1": 0.0}
    em = f1 = 0.0
    for e in examples:
        prediction = predictions.get(e.id)
        if prediction is None or not e.answers:
            continue
        em += max(exact_match(prediction, a.text) for a in e.answers)
        f1 += max(token_f1(prediction, a.text) for a in e.answers)
    return {"exact_match": 100 * em / len(examples), "f1": 100 * f1 / len(examples)}
