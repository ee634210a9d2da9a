"""The tutorials cannot rot: every ``python`` and ``bash`` block of docs/tutorial.md runs, in
order, in a fresh directory that holds the repository's ``configs/`` and ``data/`` (as a reader's
checkout does). Python blocks share one namespace, as in one interpreter session; shell blocks run
with the installed ``transformerkit`` on the path and must exit 0. The only block that does not run
is the set-up (``sh``: clone and install). docs/tutorial.zh-CN.md is its translation: its code
blocks are checked to be the English ones, character for character, so running one runs both."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = [ROOT / "docs" / "tutorial.md", ROOT / "docs" / "tutorial.zh-CN.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
RUN = {"python", "bash"}


def blocks(path: Path) -> list[tuple[str, str]]:
    return [(kind, code) for kind, code in FENCE.findall(path.read_text(encoding="utf-8"))]


def test_every_block_of_the_tutorial_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tutorial = TUTORIALS[0]
    found = blocks(tutorial)
    assert [kind for kind, _ in found if kind not in RUN] == ["sh"], "a code block the test would not run"
    for name in ("configs", "data"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                   "OMP_NUM_THREADS": str(torch.get_num_threads())}  # this worker's share of the cores (conftest)
    namespace: dict[str, object] = {"__name__": "__tutorial__"}
    for number, (kind, code) in enumerate(found, 1):
        if kind == "python":
            exec(compile(code, f"{tutorial.name}, block {number}", "exec"), namespace)  # noqa: S102 - our own docs
        elif kind == "bash":
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], env=environment, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, f"{tutorial.name}, block {number}:\n{code}\n{done.stderr[-3000:]}"
    assert (tmp_path / "tutorial" / "explain.zh.html").is_file()


def test_the_chinese_tutorial_has_the_english_code_blocks() -> None:
    assert blocks(TUTORIALS[1]) == blocks(TUTORIALS[0])
