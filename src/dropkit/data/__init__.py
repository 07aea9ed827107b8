"""Datasets: checksummed loaders that take a local path, ``$DROPKIT_DATA`` or a cached download.

Set ``DROPKIT_OFFLINE=1`` to forbid downloads wherever a caller leaves ``download`` unset.
"""

from .cache import RemoteFile, cache_dir, download_allowed, fetch
from .digits import load_digits_split
from .mnist import load_mnist_test, load_mnist_train_subset, read_idx
from .mnist1d import load_mnist1d
from .shakespeare import CharCorpus, load_tiny_shakespeare
from .uci import DATASETS, UCIDataset, get_dataset, load_uci, uci_splits

__all__ = [
    "DATASETS",
    "CharCorpus",
    "RemoteFile",
    "UCIDataset",
    "cache_dir",
    "download_allowed",
    "fetch",
    "get_dataset",
    "load_digits_split",
    "load_mnist1d",
    "load_mnist_test",
    "load_mnist_train_subset",
    "load_tiny_shakespeare",
    "load_uci",
    "read_idx",
    "uci_splits",
]
