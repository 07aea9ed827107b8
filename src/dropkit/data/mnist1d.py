"""MNIST-1D (Greydanus 2020): a small 1-d digit classification benchmark, generated offline.

Each example is a 40-step signal made from one of ten hand-drawn 1-d digit templates by random
padding, scaling, translation, correlated and i.i.d. noise, shear and resampling (S. Greydanus,
"Scaling down deep learning", 2020; the ``mnist1d`` package, Apache-2.0). The generator is
deterministic for a seed, so nothing is downloaded: the ``mnist1d`` package's
``make_dataset(get_dataset_args())`` builds the data set (its default seed 42 reproduces the
published ``mnist1d_data.pkl``), and the arrays are cached as an ``.npz`` file. The package's
``get_dataset`` is never called: it tries to download the pickle first.
"""

from __future__ import annotations

import io
import random
import zipfile
import zlib
from pathlib import Path

import numpy as np

from dropkit.metrics._optional import require

from .cache import cache_dir, write_atomically

# The seed of mnist1d's get_dataset_args(), which the published frozen data set was made with.
# Fixed here rather than read from the package so that a cache hit never imports it.
DEFAULT_SEED = 42
_N_TRAIN, _N_TEST, _LENGTH, _N_CLASSES = 4000, 1000, 40, 10
_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_mnist1d(
    seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D as ``(x_train, y_train, x_test, y_test)``.

    ``x_train`` is ``float32 (4000, 40)`` and ``x_test`` ``float32 (1000, 40)``: signals
    standardised by the generator over the whole set (mean 0, standard deviation 1); the labels
    are ``int64`` in ``0..9`` (about 400 and 100 per class). ``seed`` is the generator's seed
    (``None``: the package default, 42, which gives the published data set); the same seed gives
    the same arrays. Source: S. Greydanus, "Scaling down deep learning" (2020), generated with
    the ``mnist1d`` package's ``make_dataset``.

    The first call for a seed generates the data (``make_dataset`` takes about 0.7 s on one CPU
    core, importing the package another 0.7 s: it imports matplotlib and scipy) and saves it as
    ``<cache>/mnist1d/mnist1d-seed<seed>.npz`` (``<cache>`` as in
    :func:`dropkit.data.cache_dir`); later calls load that file in milliseconds. An unreadable
    cache file is regenerated. The caller's global ``random`` and ``numpy.random`` states are
    left as they were, although the generator reseeds them. ImportError (``pip install
    mnist1d``) when the data must be generated and the package is missing.
    """
    if seed is None:
        seed = DEFAULT_SEED
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    # The generator seeds numpy's legacy global RandomState, which accepts 0..2**32 - 1.
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must lie in 0..2**32 - 1, got {seed}")
    seed = int(seed)
    cached = cache_dir() / "mnist1d" / f"mnist1d-seed{seed}.npz"
    if cached.is_file():
        arrays = _read_cache(cached)
        if arrays is not None:
            return arrays
    arrays = _generate(seed)
    buffer = io.BytesIO()
    np.savez(buffer, **dict(zip(_KEYS, arrays, strict=True)))
    write_atomically(cached, buffer.getvalue())
    return arrays


def _generate(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run mnist1d's generator for ``seed``, restoring the global random states afterwards."""
    mnist1d_data = require("mnist1d.data", "load_mnist1d (it generates MNIST-1D)")
    get_dataset_args, make_dataset = mnist1d_data.get_dataset_args, mnist1d_data.make_dataset
    args = get_dataset_args()
    args.seed = seed
    # make_dataset calls random.seed and np.random.seed: without this, loading the data would
    # silently reset the caller's random streams. (The legacy global state is the one it uses.)
    python_state, numpy_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        data = make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)  # noqa: NPY002
    arrays = (
        np.asarray(data["x"], dtype=np.float32),
        np.asarray(data["y"], dtype=np.int64),
        np.asarray(data["x_test"], dtype=np.float32),
        np.asarray(data["y_test"], dtype=np.int64),
    )
    if not _valid(arrays):
        raise ValueError(
            "mnist1d's make_dataset returned arrays of shapes "
            f"{[a.shape for a in arrays]}, not (4000, 40), (4000,), (1000, 40), (1000,) with "
            "labels 0..9; an incompatible mnist1d version?"
        )
    return arrays


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The arrays in a cache file, or None when it is unreadable or holds something else."""
    unreadable = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        loaded = np.load(path, allow_pickle=False)
    except unreadable:
        return None
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array
        return None
    with loaded:
        try:
            arrays = tuple(loaded[key] for key in _KEYS)
        except unreadable:
            return None
    return arrays if _valid(arrays) else None


def _valid(arrays: tuple[np.ndarray, ...]) -> bool:
    x_train, y_train, x_test, y_test = arrays
    return (
        x_train.shape == (_N_TRAIN, _LENGTH)
        and x_test.shape == (_N_TEST, _LENGTH)
        and y_train.shape == (_N_TRAIN,)
        and y_test.shape == (_N_TEST,)
        and x_train.dtype == x_test.dtype == np.float32
        and y_train.dtype == y_test.dtype == np.int64
        and all(y.min() >= 0 and y.max() < _N_CLASSES for y in (y_train, y_test))
    )
