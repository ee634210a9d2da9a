"""A real English→X parallel corpus from Debian's software translations (gettext catalogs).

Debian packages carry compiled gettext catalogs (``.mo``) under
``…/<lang>/LC_MESSAGES/*.mo``: every English user-interface string with its translation — the way
the GNOME/KDE/Ubuntu corpora of OPUS were made. :func:`build_corpus` downloads the packages
with ``apt-get download``, extracts the catalogs with ``dpkg-deb --fsys-tarfile`` (nothing is
installed), reads them with ``polib``, cleans the pairs and splits them deterministically by a
hash of the English string, so a string never crosses splits and every machine gets the same split.
"""

from __future__ import annotations

import collections
import hashlib
import html
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polib

from transformerkit.data.fetch import apt_download, deb_files
from transformerkit.data.parallel import write_tsv

# Packages with large catalogs (measured: ~139k unique en→de and en→zh_CN pairs in all).
COMMON_PACKAGES = [
    "inkscape", "gimp-data", "freeciv-data", "digikam-data", "gramps", "vlc-l10n", "evolution-common",
    "evolution-data-server-common", "gnucash-common", "krita-l10n", "cinnamon-l10n", "gnumeric-common",
    "pidgin-data", "kdevelop-l10n", "k3b-i18n", "gnome-control-center-data", "filezilla-common",
    "kdenlive-data", "caja-common", "libgtk-3-common", "libgtk-4-common", "gnome-builder", "nautilus-data",
    "git", "postgresql-15", "vim-common", "coreutils", "gnupg-l10n", "libc-l10n", "dpkg", "iso-codes",
    "wesnoth-1.16-data", "wesnoth-1.16-did", "wesnoth-1.16-dm", "wesnoth-1.16-dw", "wesnoth-1.16-ei",
    "wesnoth-1.16-httt", "wesnoth-1.16-l", "wesnoth-1.16-low", "wesnoth-1.16-nr", "wesnoth-1.16-sof",
    "wesnoth-1.16-sota", "wesnoth-1.16-sotbe", "wesnoth-1.16-thot", "wesnoth-1.16-trow", "wesnoth-1.16-tsg",
    "wesnoth-1.16-ttb", "wesnoth-1.16-utbs",
]
LANGUAGE_PACKAGES = {"de": ["libreoffice-l10n-de"], "zh_CN": ["libreoffice-l10n-zh-cn"]}

SPLITS = ("train", "valid", "test")
# Of 1000 hash buckets: [0, 10) test, [10, 20) valid, the rest train.
TEST_BUCKETS, VALID_BUCKETS = 10, 10
MAX_CHARS = 400

_MARKUP = re.compile(r"</?[A-Za-z][^<>]*>")
_CJK_ACCELERATOR = re.compile(r"\s*[(（]\s*[_&][A-Za-z0-9]\s*[)）]")
_PLACEHOLDER = re.compile(
    r"%(?:\d+\$)?[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|q|j|z|t|I64)?[diouxXeEfFgGcsaAp]"  # printf
    r"|%\(\w+\)[-+ #0]*\d*(?:\.\d+)?[diouxXeEfFgGcrs]"  # Python %(name)s
    r"|%[1-9]\d*"  # Qt/KDE %1
    r"|\{[A-Za-z_]?\w*(?:[!:][^{}]*)?\}"  # Python/C# {0}, {name}
    r"|\$\{?[A-Za-z_]\w*\}?")  # shell/Wesnoth $name, ${name}
_LETTER = re.compile(r"[^\W\d_]")


def placeholders(text: str) -> collections.Counter[str]:
    """The format placeholders in ``text`` (positional ``%1$s`` counts as ``%s``)."""
    return collections.Counter(re.sub(r"^%\d+\$", "%", p) for p in _PLACEHOLDER.findall(text))


def strip_accelerator(text: str) -> str:
    """Remove a menu accelerator: ``_File``/``&File`` → ``File``; ``文件(_F)`` → ``文件``.

    Only a single marker is removed; ``&&`` stands for a literal ``&``. Strings with several
    underscores (identifiers such as ``file_name_max``) are left alone.
    """
    text = _CJK_ACCELERATOR.sub("", text)
    if text.count("_") == 1:
        text = re.sub(r"_(?=[^\W_])", "", text)
    if "&" in text:
        text = re.sub(r"&(?=[^\W_])(?![A-Za-z]+;|#\d+;)", "", text.replace("&&", "\x00")).replace("\x00", "&")
    return text


def clean_text(text: str) -> str:
    """Accelerators out, markup out, entities decoded, whitespace collapsed."""
    text = strip_accelerator(text)
    text = _MARKUP.sub(" ", text)
    text = html.unescape(text)
    return " ".join(text.split())


@dataclass
class Report:
    """What :func:`clean_pairs` kept and why it dropped the rest."""

    catalogs: int = 0
    unreadable_catalogs: list[str] = field(default_factory=list)
    raw_pairs: int = 0
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    kept: dict[str, int] = field(default_factory=dict)
    packages: list[str] = field(default_factory=list)
    missing_packages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"packages": self.packages, "missing_packages": self.missing_packages, "catalogs": self.catalogs,
                "unreadable_catalogs": self.unreadable_catalogs, "raw_pairs": self.raw_pairs,
                "dropped": dict(sorted(self.dropped.items())), "kept": self.kept}


def catalog_pairs(mo_path: Path) -> Iterator[tuple[str, str]]:
    """(English, translation) pairs of one compiled catalog; plural forms give two pairs."""
    catalog = polib.mofile(str(mo_path))
    for entry in catalog:
        if not entry.msgid:  # the header
            continue
        if entry.msgid_plural:
            forms = [entry.msgstr_plural[k] for k in sorted(entry.msgstr_plural)]
            if forms:
                yield entry.msgid, forms[0]
                yield entry.msgid_plural, forms[1] if len(forms) > 1 else forms[0]
        else:
            yield entry.msgid, entry.msgstr


def clean_pairs(pairs: Iterable[tuple[str, str]], report: Report) -> list[tuple[str, str]]:
    """Clean, filter and deduplicate; one translation per English string (the most frequent)."""
    translations: dict[str, collections.Counter[str]] = {}
    for src, tgt in pairs:
        report.raw_pairs += 1
        src, tgt = clean_text(src), clean_text(tgt)
        if not src or not tgt:
            reason = "empty"
        elif src == tgt:
            reason = "untranslated"
        elif not _LETTER.search(src):
            reason = "no words"
        elif len(src) > MAX_CHARS or len(tgt) > MAX_CHARS:
            reason = "too long"
        elif placeholders(src) != placeholders(tgt):
            reason = "placeholder mismatch"
        elif "\t" in src + tgt:
            reason = "tab"
        else:
            translations.setdefault(src, collections.Counter())[tgt] += 1
            continue
        report.dropped[reason] += 1
    kept = []
    for src, counts in translations.items():
        tgt, _ = counts.most_common(1)[0]
        duplicates = sum(counts.values()) - 1
        if duplicates:
            report.dropped["duplicate"] += duplicates
        kept.append((src, tgt))
    return kept


def split_of(src: str) -> str:
    """train / valid / test by a hash of the English string (the same on every machine)."""
    bucket = int.from_bytes(hashlib.sha256(src.encode("utf-8")).digest()[:8], "big") % 1000
    if bucket < TEST_BUCKETS:
        return "test"
    return "valid" if bucket < TEST_BUCKETS + VALID_BUCKETS else "train"


def extract_catalogs(deb: Path, lang: str, into: Path) -> list[Path]:
    """The ``<lang>/LC_MESSAGES/*.mo`` files of one package, extracted under ``into``."""
    pattern = re.compile(rf"(^|/){re.escape(lang)}/LC_MESSAGES/[^/]+\.mo$")
    found = []
    for name, contents in deb_files(deb, lambda name: bool(pattern.search(name))):
        target = into / deb.name.split("_")[0] / name.replace("/", "__")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(contents)
        found.append(target)
    return sorted(found)


def build_corpus(lang: str, out: Path, cache: Path, packages: list[str] | None = None,
                 compress: bool = False) -> Report:
    """Fetch, extract, clean and split; write ``{train,valid,test}.tsv`` (``.tsv.gz`` with
    ``compress``) and ``report.json`` to ``out``."""
    if packages is None:
        packages = COMMON_PACKAGES + LANGUAGE_PACKAGES.get(lang, [])
    report = Report()
    debs, report.missing_packages = apt_download(packages, cache)
    report.packages = [deb.name.split("_")[0] for deb in debs]

    def all_pairs(workdir: Path) -> Iterator[tuple[str, str]]:
        for deb in debs:
            for mo in extract_catalogs(deb, lang, workdir):
                report.catalogs += 1
                try:
                    yield from catalog_pairs(mo)
                except (OSError, ValueError, UnicodeDecodeError, LookupError) as error:
                    report.unreadable_catalogs.append(f"{mo.name}: {error}")

    with tempfile.TemporaryDirectory() as workdir:
        pairs = clean_pairs(all_pairs(Path(workdir)), report)
    if not pairs:
        raise RuntimeError(f"no {lang} catalogs found in the downloaded packages")
    by_split: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLITS}
    for pair in sorted(pairs):
        by_split[split_of(pair[0])].append(pair)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in by_split.items():
        write_tsv(out / (f"{name}.tsv.gz" if compress else f"{name}.tsv"), rows)
        report.kept[name] = len(rows)
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    return report
