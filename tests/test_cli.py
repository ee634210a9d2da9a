"""The command line as a Unix tool: ``-`` is a standard stream, text that is not UTF-8 is named by
file and line, a closed pipe ends a verb quietly, ``--version`` and a plain ``--help``."""

import io
import subprocess
import sys
from pathlib import Path

import pytest

from transformerkit.cli import main
from transformerkit.commands import UsageError, read_lines, write_lines


def test_a_dash_is_the_standard_stream_and_line_breaks_are_dropped(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("ein\r\nzwei\n\ndrei".encode())))
    assert read_lines("-") == ["ein", "zwei", "", "drei"]
    write_lines(["a", "b"], "-")
    assert capsys.readouterr().out == "a\nb\n"


def test_text_that_is_not_utf8_is_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "input.en"
    path.write_bytes(b"open the file\nsave \xff it\n")
    with pytest.raises(UsageError, match=r"input.en: line 2 is not UTF-8 text \(byte 6: b'\\xff'\)"):
        read_lines(str(path))
    path.write_bytes(b"open the file\n")
    assert read_lines(str(path)) == ["open the file"]


def test_a_closed_pipe_ends_a_verb_quietly() -> None:
    process = subprocess.Popen([sys.executable, "-m", "transformerkit", "model-info", "--preset", "base"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader goes away before the first line (as `| head -0` would)
    errors = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and errors == ""


def test_version_and_a_plain_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("transformerkit ")
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "examples:" in text and "transformerkit serve --model" in text
