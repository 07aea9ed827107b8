"""Fetching data files: a local path, the ``DROPKIT_DATA`` folder, or a checksummed download.

The library never depends on a particular machine's folders: a file is taken from an explicit
``path``, else from ``$DROPKIT_DATA/<relative path>``, else from the cache
(``$XDG_CACHE_HOME/dropkit`` or ``~/.cache/dropkit``), downloading it from its canonical URL
first. Every file is checked against its SHA-256 before use, and a download is written to a
temporary name and renamed, so an interrupted download never leaves a corrupt file behind.

Downloads happen unless the caller passes ``download=False`` or, when the caller leaves
``download`` at its default ``None``, the environment variable ``DROPKIT_OFFLINE`` is set (to
anything but ``0``, ``false``, ``no``, ``off`` or the empty string). A file that is missing and
may not be downloaded raises a one-line :class:`FileNotFoundError` naming the places looked,
where to put the file and the URL to get it from.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dropkit._atomic import write_atomic

# Errors of the transfer itself (unreachable host, HTTP status, dropped connection), as
# opposed to local disk errors, which must surface unchanged.
DOWNLOAD_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)

_OFF_VALUES = {"", "0", "false", "no", "off"}


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


def download_allowed(download: bool | None) -> bool:
    """Whether a loader may download: ``download`` itself when given, else not ``DROPKIT_OFFLINE``.

    ``None`` (every loader's default) means "download unless the environment variable
    ``DROPKIT_OFFLINE`` is set"; ``0``, ``false``, ``no``, ``off`` and the empty string count as
    unset. An explicit ``True`` or ``False`` always wins over the environment.

    >>> download_allowed(False), download_allowed(True)
    (False, True)
    """
    if download is not None:
        return bool(download)
    return os.environ.get("DROPKIT_OFFLINE", "").strip().lower() in _OFF_VALUES


def missing_file_error(
    remote: RemoteFile,
    looked: Sequence[Path],
    download: bool | None,
    *,
    explicit: bool = False,
    how: str | None = None,
) -> FileNotFoundError:
    """The one-line :class:`FileNotFoundError` for a file that is absent and not downloaded.

    ``looked`` lists the exact places searched; ``explicit`` says they came from a caller's
    ``path`` (the only place looked then, so the file belongs there). ``how`` replaces the
    default instruction ``download <url>`` (for files built from a download rather than
    downloaded as they are). The message has the form::

        <relpath> not found (looked at <place>, <place>) and <reason>; download <url> and save
        it as $DROPKIT_DATA/<relpath> or <cache>/<relpath>

    (on one line), where ``<reason>`` is ``download=False`` or ``downloads are off
    (DROPKIT_OFFLINE=<value>)``; with an explicit path it reads ``<relpath> not found (<place>
    does not exist; an explicit path is the only place looked); download <url> and save it as
    <place>``.
    """
    places = ", ".join(str(place) for place in looked)
    how = how or f"download {remote.url}"
    if explicit:
        verb = "does" if len(looked) == 1 else "do"
        message = (
            f"{remote.relpath} not found ({places} {verb} not exist; an explicit path is the "
            f"only place looked); {how} and save it as {looked[0]}"
        )
    else:
        if download is None:
            reason = f"downloads are off (DROPKIT_OFFLINE={os.environ.get('DROPKIT_OFFLINE')})"
        else:
            reason = "download=False"
        message = (
            f"{remote.relpath} not found (looked at {places}) and {reason}; {how} and save it "
            f"as $DROPKIT_DATA/{remote.relpath} or {cache_dir() / remote.relpath}"
        )
    # A path may hold a newline in theory; the message is promised to be one line.
    return FileNotFoundError(" ".join(message.splitlines()))


def download_error(remote: RemoteFile, error: BaseException) -> OSError:
    """A one-line :class:`OSError` for a failed download of ``remote``, naming the workaround.

    Closes the error page an :class:`urllib.error.HTTPError` holds open: left to the garbage
    collector it would be closed with a ResourceWarning.
    """
    if isinstance(error, urllib.error.HTTPError):
        error.close()
    reason = " ".join(str(error).splitlines()) or type(error).__name__
    return OSError(
        f"downloading {remote.relpath} from {remote.url} failed ({reason}); retry, or save a copy "
        f"as $DROPKIT_DATA/{remote.relpath} or {cache_dir() / remote.relpath}"
    )


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(target: Path, payload: bytes) -> None:
    """Write ``payload`` to ``target`` atomically (see :func:`dropkit._atomic.write_atomic`)."""
    write_atomic(target, lambda handle: handle.write(payload))


def _verified(path: Path, remote: RemoteFile) -> Path:
    actual = sha256_of(path)
    if actual != remote.sha256:
        raise ValueError(
            f"{path}: SHA-256 {actual} does not match the expected {remote.sha256} for "
            f"{remote.relpath}; the file is corrupt or a different version (delete it to refetch)"
        )
    return path


def fetch(
    remote: RemoteFile, path: str | os.PathLike | None = None, *, download: bool | None = None
) -> Path:
    """Return the path of a verified local copy of ``remote``.

    Order: ``path`` (a file, or a data root holding ``remote.relpath``; the only place looked
    when given), then ``$DROPKIT_DATA/<relpath>``, then the cache, downloading into it when
    :func:`download_allowed` says so (``download=None``: unless ``DROPKIT_OFFLINE`` is set).
    Raises :class:`FileNotFoundError` (one line, see :func:`missing_file_error`) when the file is
    missing and may not be downloaded, :class:`ValueError` when a copy fails its SHA-256, and
    :class:`OSError` when the download fails.
    """
    if path is not None:  # an explicit path is the only place looked: a wrong one must fail
        given = Path(path)
        candidate = given / remote.relpath if given.is_dir() else given
        if not candidate.is_file():
            raise missing_file_error(remote, [candidate], download, explicit=True)
        return _verified(candidate, remote)
    candidates = []
    if os.environ.get("DROPKIT_DATA"):
        candidates.append(Path(os.environ["DROPKIT_DATA"]) / remote.relpath)
    cached = cache_dir() / remote.relpath
    candidates.append(cached)
    for candidate in candidates:
        if candidate.is_file():
            return _verified(candidate, remote)
    if not download_allowed(download):
        raise missing_file_error(remote, candidates, download)
    cached.parent.mkdir(parents=True, exist_ok=True)
    # A unique temporary name per download: concurrent downloads never share a partial file,
    # and a failed or interrupted one leaves nothing that looks like data.
    fd, partial_name = tempfile.mkstemp(dir=cached.parent, prefix=cached.name, suffix=".part")
    partial = Path(partial_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(remote.url, timeout=60) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
            except DOWNLOAD_ERRORS as error:
                raise download_error(remote, error) from error
        _verified(partial, remote)
        partial.replace(cached)
    finally:
        partial.unlink(missing_ok=True)
    return cached
