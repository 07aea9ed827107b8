"""The scikit-learn digits split: shapes, dtypes, scaling, stratification and the partition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.datasets import load_digits

from dropkit.data import load_digits_split


def _rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Image and label side by side, rows sorted: a multiset of examples, order forgotten."""
    table = np.column_stack([np.rint(x * 16).astype(np.int64), y])
    return table[np.lexsort(table.T[::-1])]


def test_shapes_dtypes_and_range():
    x_train, y_train, x_test, y_test = load_digits_split()
    assert x_train.shape == (1347, 64)
    assert x_test.shape == (450, 64)
    assert y_train.shape == (1347,)
    assert y_test.shape == (450,)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int64
    for x in (x_train, x_test):
        assert x.min() == 0.0
        assert x.max() == 1.0
        np.testing.assert_array_equal(x * 16, np.rint(x * 16))  # the 17 levels 0/16 .. 16/16
    assert set(np.unique(np.concatenate([y_train, y_test])).tolist()) == set(range(10))


@pytest.mark.parametrize("test_size", [0.25, 0.1, 0.5])
def test_split_is_stratified_and_partitions_all_1797_images(test_size):
    x_train, y_train, x_test, y_test = load_digits_split(test_size, seed=1)
    assert len(y_test) == math.ceil(test_size * 1797)
    assert len(y_train) + len(y_test) == 1797
    total = np.bincount(np.concatenate([y_train, y_test]), minlength=10)
    test = np.bincount(y_test, minlength=10)
    assert np.all(np.abs(test - test_size * total) <= 1)  # within one image per class
    images, labels = load_digits(return_X_y=True)
    np.testing.assert_array_equal(
        _rows(np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])),
        _rows(images / 16, labels),
    )


def test_the_seed_fixes_the_split():
    first, again, other = (load_digits_split(seed=s) for s in (3, 3, 4))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("test_size", [0, 0.0, 1, 1.0, -0.2, 1.5, float("nan"), True, "0.25"])
def test_bad_test_size_is_refused(test_size):
    with pytest.raises(
        ValueError, match=r"test_size must be a fraction in the open interval \(0, 1\)"
    ):
        load_digits_split(test_size)
