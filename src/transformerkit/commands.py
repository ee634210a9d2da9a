"""The pieces a command of the ``transformerkit`` line is made of, for every module that adds
commands (each task module's ``add_commands``, gathered by ``cli.py``): the one-line usage error,
and lines in and out of files or the standard streams."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TextIO

Commands = argparse._SubParsersAction  # what ``add_subparsers`` returns: ``.add_parser(name, help=…)``


class UsageError(Exception):
    """A mistake in the command line or its values; reported in one line, exit status 2."""


def read_lines(path: str | None) -> list[str]:
    """The lines of ``path`` (stdin when None or ``-``), without their line breaks (``\n`` or
    ``\r\n``); text that is not UTF-8 is a :class:`UsageError` naming the file and the line."""
    if path is None or path == "-":
        stream = getattr(sys.stdin, "buffer", None)  # a text-only stand-in (tests, notebooks) has none
        data = stream.read() if stream is not None else sys.stdin.read().encode("utf-8")
        name = "standard input"
    else:
        with open(path, "rb") as source:
            data, name = source.read(), path
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:4096]:  # a BOM or NULs: UTF-16/32
        raise UsageError(f"{name}: UTF-16 or UTF-32 text (byte order mark or NUL bytes), not UTF-8; convert it, "
                         f"e.g. iconv -f UTF-16 -t UTF-8")
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the break after the last line
    decoded = []
    for number, line in enumerate(lines, 1):
        try:
            decoded.append(line.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError as error:
            raise UsageError(f"{name}: line {number} is not UTF-8 text (byte {error.start + 1}: "
                             f"{line[error.start:error.start + 1]!r})") from None
    return decoded


def counted(lines: Iterable[str], total: int) -> Iterator[str]:
    """``lines`` as they come, with a progress bar on stderr while it is a terminal (tqdm)."""
    from tqdm import tqdm

    with tqdm(total=total, unit="line", disable=None, file=sys.stderr, dynamic_ncols=True) as progress:
        for line in lines:
            progress.update(1)
            yield line


def write_lines(lines: Iterable[str], path: str | None) -> None:
    """Write ``lines`` to ``path`` (stdout when None or ``-``), one per line, each as it comes."""
    to_stdout = path is None or path == "-"
    sink: TextIO = sys.stdout if path is None or to_stdout else open(path, "w", encoding="utf-8")
    try:
        for line in lines:
            sink.write(line + "\n")
            sink.flush()
    finally:
        if not to_stdout:
            sink.close()


def refuse_overwriting_input(input_path: str | None, output_path: str | None) -> None:
    """A :class:`UsageError` when ``--output`` names the ``--input`` file: writing the output would
    destroy the input."""
    files = [path for path in (input_path, output_path) if path not in (None, "-")]
    if len(files) == 2 and os.path.exists(files[1]) and os.path.samefile(files[0], files[1]):
        raise UsageError(f"--output {output_path} is the --input file: write the output to another file")
