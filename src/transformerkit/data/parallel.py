"""Loaders for parallel text (translation pairs, document–summary pairs): TSV, a pair of aligned
plain-text files, JSONL and CSV with named fields.

Every loader returns a :class:`ParallelCorpus` of (source, target) strings. Empty lines (or pairs
with an empty side) are skipped and counted. Anything else that is wrong — a line without exactly
one tab, misaligned files, invalid UTF-8, broken JSON, a missing column — raises :class:`DataError` naming the file
and the line. Files ending in ``.gz`` are decompressed on the fly.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


class DataError(ValueError):
    """Unreadable or malformed data, with the file and line where it was found."""


@dataclass
class ParallelCorpus:
    pairs: list[tuple[str, str]]
    skipped_empty: int = 0

    @property
    def sources(self) -> list[str]:
        return [src for src, _ in self.pairs]

    @property
    def targets(self) -> list[str]:
        return [tgt for _, tgt in self.pairs]


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text without the newline), decoding UTF-8 strictly."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as raw:
        for number, line in enumerate(io.BufferedReader(raw), start=1):  # type: ignore[arg-type]
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(f"{path}:{number}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
            yield number, text.rstrip("\r\n")


def _collect(rows: Iterable[tuple[str, str]]) -> ParallelCorpus:
    corpus = ParallelCorpus([])
    for src, tgt in rows:
        src, tgt = src.strip(), tgt.strip()
        if src and tgt:
            corpus.pairs.append((src, tgt))
        else:
            corpus.skipped_empty += 1
    return corpus


def _read_records(path: Path, parse: Callable[[int, str], tuple[str, str]]) -> ParallelCorpus:
    """Apply ``parse(line_number, line)`` to every non-blank line of ``path``; blank lines count as empty."""
    return _collect(parse(number, line) if line.strip() else ("", "") for number, line in _lines(path))


def read_tsv(path: str | Path) -> ParallelCorpus:
    """One pair per line: ``source<TAB>target``."""
    path = Path(path)

    def parse(number: int, line: str) -> tuple[str, str]:
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"{path}:{number}: expected 2 tab-separated fields, found {len(fields)}")
        return fields[0], fields[1]

    return _read_records(path, parse)


def read_aligned(source_path: str | Path, target_path: str | Path) -> ParallelCorpus:
    """Two plain-text files, line i of one translating line i of the other."""
    source_path, target_path = Path(source_path), Path(target_path)

    def rows() -> Iterator[tuple[str, str]]:
        sources, targets = _lines(source_path), _lines(target_path)
        while True:
            src, tgt = next(sources, None), next(targets, None)
            if src is None and tgt is None:
                return
            if src is None or tgt is None:
                longer, shorter = (source_path, target_path) if tgt is None else (target_path, source_path)
                number = (src or tgt)[0]  # type: ignore[index]
                raise DataError(f"{longer}:{number}: misaligned: {shorter} ends at line {number - 1}")
            yield src[1], tgt[1]

    return _collect(rows())


def read_jsonl(path: str | Path, source_field: str = "source", target_field: str = "target") -> ParallelCorpus:
    """One JSON object per line with the two named fields."""
    path = Path(path)

    def parse(number: int, line: str) -> tuple[str, str]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: invalid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object")
        for name in (source_field, target_field):
            if not isinstance(record.get(name), str):
                raise DataError(f"{path}:{number}: field {name!r} is missing or not a string")
        return record[source_field], record[target_field]

    return _read_records(path, parse)


def load_parallel(path: str | Path, target_path: str | Path | None = None, source_field: str = "source",
                  target_field: str = "target") -> ParallelCorpus:
    """Pick the loader: ``target_path`` given → aligned files; ``.jsonl`` → JSONL and ``.csv`` → CSV
    (both with the named fields); otherwise TSV."""
    path = Path(path)
    if target_path is not None:
        return read_aligned(path, target_path)
    suffixes = path.name.removesuffix(".gz")
    if suffixes.endswith(".jsonl") or suffixes.endswith(".json"):
        return read_jsonl(path, source_field, target_field)
    if suffixes.endswith(".csv"):
        return read_csv(path, source_field, target_field)
    return read_tsv(path)


def read_csv(path: str | Path, source_field: str = "source", target_field: str = "target") -> ParallelCorpus:
    """A CSV file whose header row names the two columns (quoted fields may hold commas and line breaks)."""
    path = Path(path)
    reader = csv.DictReader(io.StringIO("\n".join(line for _, line in _lines(path))))
    missing = [f for f in (source_field, target_field) if f not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{path}:1: no column {', '.join(map(repr, missing))} in the header {reader.fieldnames}")

    def rows() -> Iterator[tuple[str, str]]:
        for row in reader:
            if None in row or row[source_field] is None or row[target_field] is None:
                raise DataError(f"{path}:{reader.line_num}: the row does not have the header's columns")
            yield row[source_field], row[target_field]

    return _collect(rows())


def write_tsv(path: str | Path, pairs: list[tuple[str, str]]) -> None:
    """Write pairs as ``source<TAB>target`` lines (gzip when the name ends in ``.gz``)."""
    path = Path(path)
    text = "".join(f"{src}\t{tgt}\n" for src, tgt in pairs).encode("utf-8")
    path.write_bytes(gzip.compress(text, mtime=0) if path.suffix == ".gz" else text)
