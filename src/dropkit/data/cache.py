"""Fetching data files: a local path, the ``DROPKIT_DATA`` folder, or a checksummed download.

The library never depends on a particular machine's folders: a file is taken from an explicit
``path``, else from ``$DROPKIT_DATA/<relative path>``, else from the cache
(``$XDG_CACHE_HOME/dropkit`` or ``~/.cache/dropkit``), downloading it from its canonical URL
first. Every file is checked against its SHA-256 before use, and a download is written to a
temporary name and renamed, so an interrupted download never leaves a corrupt file behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RemoteFile:
    """A data file: where it lives relative to a data root, its canonical URL and checksum."""

    relpath: str
    url: str
    sha256: str


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dropkit`` (default ``~/.cache/dropkit``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dropkit"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, remote: RemoteFile) -> Path:
    actual = sha256_of(path)
    if actual != remote.sha256:
        raise ValueError(
            f"{path}: SHA-256 {actual} does not match the expected {remote.sha256} for "
            f"{remote.relpath}; the file is corrupt or a different version (delete it to refetch)"
        )
    return path


def fetch(
    remote: RemoteFile, path: str | os.PathLike | None = None, *, download: bool = True
) -> Path:
    """Return a verified local copy of ``remote``.

    Order: ``path`` (a file, or a data root holding ``remote.relpath``), then
    ``$DROPKIT_DATA/<relpath>``, then the cache, downloading into it when ``download``.
    """
    if path is not None:  # an explicit path is the only place looked: a wrong one must fail
        given = Path(path)
        candidate = given / remote.relpath if given.is_dir() else given
        if not candidate.is_file():
            raise FileNotFoundError(f"{candidate} does not exist (looked for {remote.relpath})")
        return _verified(candidate, remote)
    candidates = []
    if os.environ.get("DROPKIT_DATA"):
        candidates.append(Path(os.environ["DROPKIT_DATA"]) / remote.relpath)
    cached = cache_dir() / remote.relpath
    candidates.append(cached)
    for candidate in candidates:
        if candidate.is_file():
            return _verified(candidate, remote)
    if not download:
        raise FileNotFoundError(f"{remote.relpath} is not in {cached.parent} and download=False")
    cached.parent.mkdir(parents=True, exist_ok=True)
    # A unique temporary name per download: concurrent downloads never share a partial file,
    # and a failed or interrupted one leaves nothing that looks like data.
    fd, partial_name = tempfile.mkstemp(dir=cached.parent, prefix=cached.name, suffix=".part")
    partial = Path(partial_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url, timeout=60) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
        _verified(partial, remote)
        partial.replace(cached)
    finally:
        partial.unlink(missing_ok=True)
    return cached
