"""Dropout on ``torch.distributed``: results that do not depend on how the work is split.

dropkit's masks are a pure function of (key, stream position), so scaling out needs no RNG
tracker, only the right key and position on each process:

* :func:`data_parallel` - DDP/FSDP2: every rank uses the same key per call and the positions
  of its rows in the global batch, so W ranks on B/W rows each give the masks (and, with
  equal batches, the parameters) of one process on B rows.
* :func:`dropout_shard`, :func:`dtensor_dropout` - tensor parallel: a shard (``Shard(-1)``,
  ``Shard(1)``, ...) takes its block of the whole tensor's mask; ``Replicate`` gets the same
  mask on every rank.
* :func:`gather_rows`, :func:`sharded_predict` - Monte Carlo scoring of a pool split over
  ranks with ``consistent=True``, gathered in pool order on every rank.

See the "Distributed: world-size invariance" page of the docs for NCCL/GPU use.
"""

from __future__ import annotations

from .data_parallel import RowShard, agreed_seed, data_parallel, shares_batch_mask
from .gather import gather_rows, sharded_predict, whole_batches
from .tensor import dropout_shard, dtensor_dropout, shard_words

__all__ = [
    "RowShard",
    "agreed_seed",
    "data_parallel",
    "dropout_shard",
    "dtensor_dropout",
    "gather_rows",
    "shard_words",
    "sharded_predict",
    "shares_batch_mask",
    "whole_batches",
]
