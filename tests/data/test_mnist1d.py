"""MNIST-1D generated offline: shapes, labels, determinism, the npz cache and its fallbacks.

Each generation takes about 0.7 s, so the tests share a few seeds; the cache always lives under
``tmp_path``.
"""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest

from dropkit.data import load_mnist1d

mnist1d_data = pytest.importorskip("mnist1d.data", reason="the mnist1d package is not installed")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """The dropkit cache folder, empty, under ``tmp_path``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DROPKIT_DATA", raising=False)
    monkeypatch.delenv("DROPKIT_OFFLINE", raising=False)
    return tmp_path / "xdg" / "dropkit" / "mnist1d"


@pytest.fixture(scope="module")
def reference():
    """The package's own default set, ``make_dataset(get_dataset_args())``, made once."""
    numpy_state, python_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        return mnist1d_data.make_dataset(mnist1d_data.get_dataset_args())
    finally:  # make_dataset reseeds the global streams; other tests must not notice
        np.random.set_state(numpy_state)  # noqa: NPY002
        random.setstate(python_state)


def _forbid_generation(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("make_dataset was called although the cache holds the data")

    monkeypatch.setattr(mnist1d_data, "make_dataset", fail)


def test_default_set_shapes_labels_and_the_packages_own_arrays(cache, reference):
    x_train, y_train, x_test, y_test = load_mnist1d()
    assert x_train.shape == (4000, 40)
    assert x_test.shape == (1000, 40)
    assert y_train.shape == (4000,)
    assert y_test.shape == (1000,)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int64
    assert set(np.unique(y_train).tolist()) == set(range(10))
    assert set(np.unique(y_test).tolist()) == set(range(10))
    assert np.bincount(y_train).min() > 350  # about 400 per class
    # seed None is the package default (42): the arrays of make_dataset(get_dataset_args())
    np.testing.assert_array_equal(x_train, reference["x"].astype(np.float32))
    np.testing.assert_array_equal(y_test, reference["y_test"])
    assert sorted(p.name for p in cache.iterdir()) == ["mnist1d-seed42.npz"]  # no .part


def test_a_seed_is_deterministic_and_the_cache_is_hit(cache, tmp_path, monkeypatch, reference):
    numpy_state = np.random.get_state()[1].copy()  # noqa: NPY002
    python_state = random.getstate()
    first = load_mnist1d(seed=7)
    # The generator reseeds the global streams; the loader must put them back.
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)  # noqa: NPY002
    assert random.getstate() == python_state
    assert (cache / "mnist1d-seed7.npz").is_file()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other"))
    regenerated = load_mnist1d(seed=7)  # an empty cache: generated again
    _forbid_generation(monkeypatch)
    cached = load_mnist1d(seed=7)
    for a, b, c in zip(first, regenerated, cached, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        assert a.dtype == c.dtype
    assert not np.array_equal(first[0], reference["x"].astype(np.float32))  # seed 7 is not 42


def test_an_unreadable_cache_file_is_regenerated(cache):
    cache.mkdir(parents=True)
    (cache / "mnist1d-seed3.npz").write_bytes(b"not an npz")
    x_train, y_train, _, _ = load_mnist1d(seed=3)
    assert x_train.shape == (4000, 40)
    again = load_mnist1d(seed=3)
    np.testing.assert_array_equal(again[0], x_train)
    np.testing.assert_array_equal(again[1], y_train)


@pytest.mark.parametrize(
    ("seed", "error"),
    [(-1, ValueError), (2**32, ValueError), (1.5, TypeError), (True, TypeError), ("1", TypeError)],
)
def test_bad_seeds_are_refused(seed, error):
    with pytest.raises(error, match="seed"):
        load_mnist1d(seed)


def test_missing_package_says_how_to_install_it(monkeypatch):
    # A None entry in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match=r"mnist1d, .*pip install \"dropkit\[experiments\]\""):
        load_mnist1d(seed=5)
