"""A real summarization corpus: Debian packages' long descriptions and their one-line synopses.

Every Debian package has a description written by its maintainer: a synopsis (the first line)
and a long description (the indented lines after it, `` .`` between paragraphs). They come with
Debian's package index as ``*_i18n_Translation-en*`` files::

    Package: 0ad
    Description-md5: d943033bedada21853d2ae54a2578a7b
    Description-en: Real-time strategy game of ancient warfare
     0 A.D. (pronounced "zero ey-dee") is a free, open-source, cross-platform
     real-time strategy (RTS) game of ancient warfare. …

:func:`build_debian_descriptions` fetches the index into a private lists directory (``apt-get
update -o Dir::State::Lists=… -o Acquire::Languages=en``: machines often set ``Acquire::Languages
"none"``), decompresses it with ``apt-helper cat-file``, keeps one pair per ``Description-md5``,
drops descriptions too short to summarize, and splits by a hash of the source package (from the
``Packages`` index), so ``foo``, ``foo-doc`` and ``libfoo1`` never straddle splits.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformerkit.data.parallel import DataError

APT_HELPER = "/usr/lib/apt/apt-helper"
SPLITS = ("train", "valid", "test")
# Of 1000 hash buckets of the source package: [0, 30) test, [30, 50) valid, the rest train.
TEST_BUCKETS, VALID_BUCKETS = 30, 20
MIN_DOCUMENT_WORDS = 20
"""Shorter long descriptions ("This package contains the debug symbols …") are not worth summarizing."""


@dataclass(frozen=True)
class Description:
    package: str
    md5: str
    synopsis: str
    document: str


def stanzas(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """Deb822 stanzas as {field: value}; continuation lines are joined to their field with newlines."""
    stanza: dict[str, str] = {}
    key = None
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, None
        elif line[0] in " \t" and key is not None:
            stanza[key] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            stanza[key] = value.strip()
    if stanza:
        yield stanza


def long_description(lines: list[str]) -> str:
    """Debian's long-description markup as plain text: `` .`` lines separate paragraphs, the text of
    every line is kept (lists and verbatim lines included), whitespace collapses to single spaces."""
    paragraphs, current = [], []
    for line in lines:
        if line.strip() == ".":
            paragraphs.append(" ".join(current))
            current = []
        else:
            current.append(" ".join(line.split()))
    paragraphs.append(" ".join(current))
    return " ".join(p for p in paragraphs if p)


def descriptions(lines: Iterable[str]) -> Iterator[Description]:
    """The (synopsis, long description) of each stanza of a Translation-en file."""
    for stanza in stanzas(lines):
        text = stanza.get("Description-en")
        if not text or "Package" not in stanza:
            continue
        synopsis, *rest = text.split("\n")
        yield Description(stanza["Package"], stanza.get("Description-md5", ""), " ".join(synopsis.split()),
                          long_description(rest))


def source_packages(lines: Iterable[str]) -> dict[str, str]:
    """{binary package: source package} from a ``Packages`` index (``Source: name (version)``)."""
    return {s["Package"]: s.get("Source", s["Package"]).split()[0] for s in stanzas(lines) if "Package" in s}


def name_stem(package: str) -> str:
    """A grouping key for a package with no known source: ``libfoo1-dev`` → ``foo``."""
    stem = re.sub(r"-(doc|dev|data|common|dbg|utils|tools|bin|examples|l10n|i18n)$", "", package)
    return re.sub(r"^lib|[\d.]+$", "", stem) or package


def split_of(group: str) -> str:
    bucket = int(hashlib.sha256(group.encode("utf-8")).hexdigest(), 16) % 1000
    if bucket < TEST_BUCKETS:
        return "test"
    return "valid" if bucket < TEST_BUCKETS + VALID_BUCKETS else "train"


def _index_lines(path: Path) -> Iterator[str]:
    """The decompressed lines of an index file (.lz4, .xz, .gz or plain), via apt-helper."""
    with subprocess.Popen([APT_HELPER, "cat-file", str(path)], stdout=subprocess.PIPE, text=True,
                          encoding="utf-8", errors="replace") as proc:
        assert proc.stdout is not None
        yield from proc.stdout
    if proc.returncode:
        raise DataError(f"apt-helper could not read {path}")


def fetch_index(lists: Path) -> tuple[list[Path], list[Path]]:
    """``apt-get update`` into ``lists`` with English descriptions; (Translation-en files, Packages files)."""
    if shutil.which("apt-get") is None or not Path(APT_HELPER).exists():
        raise DataError("`data debian-descriptions` needs apt-get and apt-helper (a Debian-based system)")
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["apt-get", "update", "-o", f"Dir::State::Lists={lists.resolve()}",
                           "-o", "Acquire::Languages=en"], capture_output=True, text=True)
    translations = sorted(lists.glob("*_i18n_Translation-en*"))
    packages = sorted(p for p in lists.glob("*_Packages*") if not p.name.endswith(".diff_Index"))
    if not translations:
        raise DataError(f"apt-get update fetched no Translation-en index into {lists}: {done.stderr.strip()[-300:]}")
    return translations, packages


def corpus_from_index(translations: Iterable[Iterable[str]], packages: Iterable[Iterable[str]]
                      ) -> tuple[dict[str, list[dict[str, str]]], dict[str, Any]]:
    """Rows {"document", "summary", "package", "source"} per split, and what was kept and dropped,
    from the lines of Translation-en files and of Packages files."""
    sources: dict[str, str] = {}
    for lines in packages:
        sources.update(source_packages(lines))
    seen: set[str] = set()
    report: dict[str, Any] = {"stanzas": 0, "duplicates": 0, "too_short": 0, "no_source_package": 0, "kept": {}}
    rows: dict[str, list[dict[str, str]]] = {name: [] for name in SPLITS}
    for lines in translations:
        for d in descriptions(lines):
            report["stanzas"] += 1
            key = d.md5 or hashlib.md5(f"{d.synopsis}\n{d.document}".encode()).hexdigest()
            if key in seen:
                report["duplicates"] += 1
                continue
            seen.add(key)
            if len(d.document.split()) < MIN_DOCUMENT_WORDS or not d.synopsis:
                report["too_short"] += 1
                continue
            source = sources.get(d.package)
            if source is None:
                report["no_source_package"] += 1
            group = source or name_stem(d.package)
            rows[split_of(group)].append({"document": d.document, "summary": d.synopsis, "package": d.package,
                                          "source": group})
    for name, split_rows in rows.items():
        split_rows.sort(key=lambda r: r["package"])
        report["kept"][name] = len(split_rows)
        if split_rows:
            report[f"{name}_mean_words"] = {
                field: round(sum(len(r[field].split()) for r in split_rows) / len(split_rows), 1)
                for field in ("document", "summary")}
    return rows, report


def build_debian_descriptions(out: Path, lists: Path) -> dict[str, Any]:
    """Fetch Debian's index into ``lists`` and write ``{train,valid,test}.jsonl`` and ``report.json`` to ``out``."""
    translations, packages = fetch_index(lists)
    rows, report = corpus_from_index(map(_index_lines, translations), map(_index_lines, packages))
    out.mkdir(parents=True, exist_ok=True)
    for name, split_rows in rows.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in split_rows)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
