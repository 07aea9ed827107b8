"""Datasets: checksummed loaders that take a local path, ``$DROPKIT_DATA`` or a cached download."""

from .cache import RemoteFile, cache_dir, fetch
from .mnist import load_mnist_test, load_mnist_train_subset, read_idx
from .uci import DATASETS, UCIDataset, get_dataset, load_uci, uci_splits

__all__ = [
    "DATASETS",
    "RemoteFile",
    "UCIDataset",
    "cache_dir",
    "fetch",
    "get_dataset",
    "load_mnist_test",
    "load_mnist_train_subset",
    "load_uci",
    "read_idx",
    "uci_splits",
]
