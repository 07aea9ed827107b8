"""Datasets: checksummed loaders that take a local path, ``$DROPKIT_DATA`` or a cached download."""

from .cache import RemoteFile, cache_dir, fetch
from .uci import DATASETS, UCIDataset, get_dataset, load_uci, uci_splits

__all__ = [
    "DATASETS",
    "RemoteFile",
    "UCIDataset",
    "cache_dir",
    "fetch",
    "get_dataset",
    "load_uci",
    "uci_splits",
]
