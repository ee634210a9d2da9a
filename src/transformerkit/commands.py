"""The pieces a command of the ``transformerkit`` line is made of, for every module that adds
commands (each task module's ``add_commands``, gathered by ``cli.py``): the one-line usage error,
and lines in and out of files or the standard streams."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

Commands = argparse._SubParsersAction  # what ``add_subparsers`` returns: ``.add_parser(name, help=…)``


class UsageError(Exception):
    """A mistake in the command line or its values; reported in one line, exit status 2."""


def read_lines(path: str | None) -> list[str]:
    """The lines of ``path`` (stdin when None), without their line breaks."""
    if path is None:
        return [line.rstrip("\n") for line in sys.stdin]
    with open(path, encoding="utf-8") as source:
        return [line.rstrip("\n") for line in source]


def write_lines(lines: list[str], path: str | None) -> None:
    """Write ``lines`` to ``path`` (stdout when None), one per line."""
    sink: TextIO = open(path, "w", encoding="utf-8") if path else sys.stdout
    try:
        sink.writelines(line + "\n" for line in lines)
        sink.flush()
    finally:
        if path:
            sink.close()
