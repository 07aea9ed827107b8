"""Sharded Monte Carlo scoring: each rank samples its part of the pool, all ranks get the whole.

With ``consistent=True``, :func:`dropkit.mc.predict` gives MC sample ``t`` of every input the
same masks, keyed by ``(seed, module, t)`` only (never by the batch). So W ranks that each
predict their share of a pool (a ``DistributedSampler`` without shuffling) produce exactly the
rows one process would, and :func:`gather_rows` puts them back in pool order on every rank:
acquisition (top-k BALD, BatchBALD) then runs on identical inputs everywhere.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .data_parallel import _comm_device, _gather_ints


def gather_rows(
    values: torch.Tensor, index: torch.Tensor, *, dim: int = 0, group: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gather the rows ``values`` (along ``dim``) of pool items ``index`` from every rank.

    Returns ``(rows, items)``: the rows of all ranks sorted by item index, each item once
    (``DistributedSampler`` pads the last shard with repeats; the duplicates are dropped), and
    the sorted unique item indices. Every rank gets the same result.

    Shape: ``values`` ``(..., n_r, ...)`` with ``n_r = len(index)`` in ``dim``; ``index``
    ``(n_r,)`` int; ``rows`` ``(..., N, ...)`` with ``N`` the number of distinct items.
    """
    index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
    dim = dim % values.dim()
    if values.shape[dim] != index.numel():
        raise ValueError(
            f"gather_rows: values has {values.shape[dim]} rows in dim {dim} but index has "
            f"{index.numel()} items"
        )
    device = _comm_device(group)
    sizes = _gather_ints(index.numel(), group)
    most = max(sizes)
    moved = values.movedim(dim, 0).contiguous().to(device)
    padded = moved.new_zeros((most, *moved.shape[1:]))
    padded[: moved.shape[0]] = moved
    ids = torch.full((most,), -1, dtype=torch.int64, device=device)
    ids[: index.numel()] = index.to(device)
    all_rows = [torch.empty_like(padded) for _ in sizes]
    all_ids = [torch.empty_like(ids) for _ in sizes]
    dist.all_gather(all_rows, padded, group=group)
    dist.all_gather(all_ids, ids, group=group)
    rows = torch.cat([r[:n] for r, n in zip(all_rows, sizes, strict=True)])
    items = torch.cat([i[:n] for i, n in zip(all_ids, sizes, strict=True)])
    order = torch.argsort(items, stable=True)
    items, rows = items[order], rows[order]
    first = torch.ones_like(items, dtype=torch.bool)
    first[1:] = items[1:] != items[:-1]
    rows, items = rows[first], items[first]
    return rows.movedim(0, dim).to(values.device), items.to(values.device)


def whole_batches(n: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """Rank ``rank``'s batches when the ``ceil(n / batch_size)`` batches of a sequential
    loader are dealt round-robin: batches ``rank, rank + world, ...``."""
    starts = range(rank * batch_size, n, world * batch_size)
    return [list(range(s, min(s + batch_size, n))) for s in starts]


def sharded_predict(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    samples: int = 50,
    *,
    batch_size: int = 256,
    seed: int = 0,
    group: Any = None,
    shard: str = "rows",
    **predict_kwargs: Any,
) -> torch.Tensor:
    """MC samples of a whole pool, computed in shares by the ranks of ``group``.

    Each rank runs :func:`dropkit.mc.predict` (``consistent=True``, ``seed``) on its share of
    ``dataset``, then :func:`gather_rows` assembles the ``(T, N, ...)`` samples in dataset
    order on every rank, equal to one process predicting the whole pool with the same
    arguments (the rows of a sample do not depend on the batch). Shares:

    * ``shard="rows"``: a ``DistributedSampler`` (no shuffling; rows ``rank, rank + W, ...``,
      the last share padded with repeats, dropped by the gather). Equal to one process up to
      BLAS rounding, which depends on which rows share a batch.
    * ``shard="batches"``: whole batches of a sequential ``DataLoader(dataset, batch_size)``
      dealt round-robin (:func:`whole_batches`), so every batch holds the rows it holds in one
      process: bit-for-bit equal to one process on the same kernels and thread settings.
      Needs at least W batches.

    ``predict_kwargs`` go to ``predict`` (``target=``, ``strategy=``, ...; ``keep_samples``
    must stay True).

    Example (on every rank)::

        probs = sharded_predict(model, pool, samples=20, seed=0, target=1)
        picked = dropkit.acquisition.batch_bald(probs.numpy(), k=10)  # the same on all ranks
    """
    from torch.utils.data import DataLoader, DistributedSampler

    from dropkit.mc import predict

    rank = dist.get_rank(group)
    world = dist.get_world_size(group)
    if shard == "rows":
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
        order = list(iter(sampler))
    elif shard == "batches":
        n = len(dataset)  # type: ignore[arg-type]
        if -(-n // batch_size) < world:
            raise ValueError(
                f"sharded_predict(shard='batches'): {n} items make fewer than {world} batches "
                f"of {batch_size}; lower batch_size or use shard='rows'"
            )
        batches = whole_batches(n, batch_size, rank, world)
        loader = DataLoader(dataset, batch_sampler=batches)
        order = [i for b in batches for i in b]
    else:
        raise ValueError(f"sharded_predict: shard must be 'rows' or 'batches', got {shard!r}")
    result = predict(model, loader, samples, seed=seed, consistent=True, **predict_kwargs)
    if result.samples is None:
        raise ValueError("sharded_predict needs keep_samples=True")
    index = torch.tensor(order, dtype=torch.int64)
    rows, _ = gather_rows(result.samples, index, dim=1, group=group)
    return rows
