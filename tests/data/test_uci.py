"""UCI loader: checksums, the local-path/env/cache lookup, and the regenerated standard splits.

The split checks compare against the original index files in the shared data folder when it
exists (they are not part of dropkit: their licence is non-commercial) and skip otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

from dropkit.data import DATASETS, RemoteFile, fetch, get_dataset, load_uci, uci_splits
from dropkit.data.cache import sha256_of
from tests.conftest import DATA as SHARED

needs_shared = pytest.mark.skipif(
    not (SHARED / "uci").is_dir(), reason=f"shared UCI data not found at {SHARED}"
)


def _index(name: str, kind: str, i: int) -> np.ndarray:
    return np.loadtxt(SHARED / "uci" / name / "data" / f"index_{kind}_{i}.txt", dtype=np.int64)


@needs_shared
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_regenerated_splits_equal_the_original_index_files(name):
    """Every train/test split equals the published index files, element for element."""
    info = DATASETS[name]
    _, y = load_uci(name, SHARED)
    splits = uci_splits(len(y), info.n_splits)
    assert len(splits) == info.n_splits
    for i, (train, test) in enumerate(splits):
        np.testing.assert_array_equal(train, _index(name, "train", i))
        np.testing.assert_array_equal(test, _index(name, "test", i))


@needs_shared
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_loader_shapes_and_protocol_constants_match_the_files(name):
    """Features/target columns and the hidden-size/epochs/tau grids agree with the folder."""
    info = DATASETS[name]
    folder = SHARED / "uci" / name / "data"
    x, y = load_uci(name, SHARED)
    assert x.shape == (len(y), len(np.loadtxt(folder / "index_features.txt", ndmin=1)))
    assert info.target == int(np.loadtxt(folder / "index_target.txt"))
    assert info.n_hidden == int(np.loadtxt(folder / "n_hidden.txt"))
    assert info.n_splits == int(np.loadtxt(folder / "n_splits.txt"))
    assert info.tau_grid == tuple(np.loadtxt(folder / "tau_values.txt", ndmin=1))
    assert info.dropout_grid == tuple(np.loadtxt(folder / "dropout_rates.txt", ndmin=1))
    np.testing.assert_array_equal(y, np.loadtxt(folder / "data.txt")[:, info.target])


def test_splits_partition_the_rows():
    """Train and test are disjoint, cover every row, and train has round(0.9 n) rows."""
    for train, test in uci_splits(101, 3):
        assert len(train) == 91
        assert sorted(np.concatenate([train, test]).tolist()) == list(range(101))


def test_fetch_checks_the_checksum(tmp_path):
    """A local file whose SHA-256 differs is refused with a message naming both hashes."""
    good = tmp_path / "f.txt"
    good.write_text("1 2 3\n")
    remote = RemoteFile("f.txt", "https://example.invalid/f.txt", sha256_of(good))
    assert fetch(remote, good) == good
    assert fetch(remote, tmp_path) == good  # a data root holding relpath
    bad = RemoteFile("f.txt", remote.url, "0" * 64)
    with pytest.raises(ValueError, match="does not match"):
        fetch(bad, good)


def test_fetch_uses_dropkit_data_env_and_never_downloads_when_told_not_to(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    target = tmp_path / "sub" / "g.txt"
    target.write_text("x")
    remote = RemoteFile("sub/g.txt", "https://example.invalid/g.txt", sha256_of(target))
    monkeypatch.setenv("DROPKIT_DATA", str(tmp_path))
    assert fetch(remote) == target
    monkeypatch.delenv("DROPKIT_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="download=False"):
        fetch(remote, download=False)


def test_bad_names_and_arguments():
    with pytest.raises(ValueError, match="unknown UCI dataset 'boston'"):
        get_dataset("boston")
    with pytest.raises(ValueError, match="train_fraction"):
        uci_splits(10, 2, train_fraction=1.5)
    with pytest.raises(FileNotFoundError):
        load_uci("yacht", "/nonexistent/data.txt")


def test_fetch_downloads_into_the_cache_and_leaves_no_partial_file(tmp_path, monkeypatch):
    """A download (file:// URL) is verified, renamed into the cache, and a corrupt one leaves
    neither the file nor a partial file behind."""
    source = tmp_path / "src.txt"
    source.write_text("4 5 6\n")
    monkeypatch.delenv("DROPKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    remote = RemoteFile("d/f.txt", source.as_uri(), sha256_of(source))
    got = fetch(remote)
    assert got.read_text() == "4 5 6\n"
    assert sorted(p.name for p in got.parent.iterdir()) == ["f.txt"]
    bad = RemoteFile("d/g.txt", source.as_uri(), "1" * 64)
    with pytest.raises(ValueError, match="does not match"):
        fetch(bad)
    assert sorted(p.name for p in got.parent.iterdir()) == ["f.txt"]


def test_an_explicit_path_is_the_only_place_looked(tmp_path, monkeypatch):
    """A wrong explicit path fails even when the cache holds the file."""
    source = tmp_path / "src.txt"
    source.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    remote = RemoteFile("h.txt", source.as_uri(), sha256_of(source))
    fetch(remote)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fetch(remote, tmp_path / "missing.txt")
