"""Masks of a block of a larger tensor: tensor-parallel shards and DTensor inputs.

dropkit's mask gives element ``i`` of the row-major flattened (mask) tensor the Philox stream
position ``offset + i`` (:mod:`dropkit.rng.philox`). A block starting at global coordinates
``(o_0, ..., o_{k-1})`` of a tensor of global shape ``(G_0, ..., G_{k-1})`` takes, for its
element ``(i_0, ..., i_{k-1})``, position

    offset + sum_d (o_d + i_d) * S_d,    S_d = G_{d+1} * ... * G_{k-1}

so the blocks' masks, put together, are the whole tensor's mask under the same key, and a
replicated tensor (offset 0 on every dim) gets the same mask on every rank. This is what
:func:`dropkit.functional.dropout` does with a ``torch.distributed.tensor`` DTensor input, and
what :func:`dropkit.distributed.dropout_shard` does for a plain tensor and explicit
coordinates. No RNG tracker is involved: only the key must be the same on every rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from . import backend as rng_backend
from .ops import philox_words, threshold

#: Up to this many runs of contiguous positions, each run is one kernel call; above it, the
#: words of the whole span between the first and last position are drawn and gathered.
MAX_RUNS = 32


def block_key(seed: int | torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    """The call's key, the same on every rank: ``seed``; else the active stream's next key
    (never row-shifted: a block's coordinates are explicit); else a draw from ``generator`` or
    torch's generator (which must then be in the same state on every rank)."""
    seed_t, _ = rng_backend.check_seed(seed, 0)
    if seed_t is not None:
        return seed_t
    stream = rng_backend.active_stream
    if generator is None and stream is not None:
        return torch.tensor(stream.next_key(), dtype=torch.int64)
    return rng_backend.draw_seed(generator)


def shard_words(
    local_shape: Sequence[int],
    global_shape: Sequence[int],
    shard_offset: Sequence[int],
    *,
    seed: torch.Tensor,
    offset: int = 0,
    device: torch.device | str | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """The Philox words (int64 in [0, 2^32)) of a block of a tensor, shape ``local_shape``.

    Word ``(i_0, ...)`` is that of position ``offset + sum_d (shard_offset[d] + i_d) S_d``
    (row-major strides ``S`` of ``global_shape``). The block splits into runs of contiguous
    positions (the dims after the last narrowed one are whole); a few runs are one kernel call
    each, many are drawn as one span and gathered (up to the whole tensor's words).
    """
    local = [int(n) for n in local_shape]
    glob = [int(n) for n in global_shape]
    start = [int(o) for o in shard_offset]
    if not len(local) == len(glob) == len(start):
        raise ValueError(
            f"local shape {tuple(local)}, global shape {tuple(glob)} and shard offset "
            f"{tuple(start)} must have the same number of dims"
        )
    for d, (n, g, o) in enumerate(zip(local, glob, start, strict=True)):
        if n < 0 or o < 0 or o + n > g:
            raise ValueError(
                f"the block {tuple(local)} at {tuple(start)} does not fit the global shape "
                f"{tuple(glob)} (dim {d})"
            )
    device = torch.device("cpu" if device is None else device)
    name = rng_backend.resolve(device, backend)
    strides = [math.prod(glob[d + 1 :]) for d in range(len(glob))]
    # k: the last dim where the block is narrower than the tensor; dims after it are whole.
    k = max((d for d in range(len(glob)) if local[d] != glob[d]), default=0)
    run = local[k] * strides[k] if glob else 1
    base = offset + sum(o * s for o, s in zip(start, strides, strict=True))
    outer = local[:k]
    if math.prod(outer) == 0 or run == 0:
        return torch.empty(local, dtype=torch.int64, device=device)
    starts = torch.zeros((), dtype=torch.int64)
    for d, n in enumerate(outer):  # start position of each run, shape `outer`
        starts = starts.unsqueeze(-1) + torch.arange(n, dtype=torch.int64) * strides[d]
    starts = starts.reshape(-1)
    if starts.numel() <= MAX_RUNS:
        parts = [philox_words(seed, base + s, run, device, name) for s in starts.tolist()]
        return torch.cat(parts).reshape(local)
    words = philox_words(seed, base, int(starts[-1]) + run, device, name)
    index = (starts.unsqueeze(1) + torch.arange(run, dtype=torch.int64)).reshape(-1)
    return words[index.to(device)].reshape(local)


def block_dropout(
    x: torch.Tensor,
    p: float,
    scale: float,
    *,
    global_shape: Sequence[int],
    shard_offset: Sequence[int],
    dims: Sequence[int] = (),
    seed: torch.Tensor,
    offset: int = 0,
    backend: str | None = None,
) -> torch.Tensor:
    """``where(keep, x * scale, 0)`` for the block ``x`` of a tensor of ``global_shape`` at
    ``shard_offset``, with the block's part of the whole tensor's mask (one mask value shared
    along the normalised ``dims``, as ``dropout(broadcast_dims=dims)``). ``p = 1``: zeros."""
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    if p >= 1.0 or scale == 0.0:
        return torch.where(torch.zeros((), dtype=torch.bool, device=x.device), x, zero)
    local = [1 if d in dims else n for d, n in enumerate(x.shape)]
    glob = [1 if d in dims else n for d, n in enumerate(global_shape)]
    start = [0 if d in dims else o for d, o in enumerate(shard_offset)]
    words = shard_words(
        local, glob, start, seed=seed, offset=offset, device=x.device, backend=backend
    )
    return torch.where(words >= threshold(p), x * scale, zero)


def is_dtensor(x: object) -> bool:
    """Whether ``x`` is a ``torch.distributed.tensor.DTensor`` (without importing it)."""
    return type(x).__name__ == "DTensor" and type(x).__module__.startswith("torch.distributed")


def dtensor_dropout(
    x: Any,
    p: float,
    scale: float,
    dims: Sequence[int] = (),
    *,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> Any:
    """Training-mode dropout of a DTensor: each rank drops its local shard with its block of
    the global mask (:func:`block_dropout`) and the result has the same mesh and placements.

    ``Shard(d)`` and ``Replicate`` placements on any mesh (uneven shards included); ``Partial``
    raises. Autograd flows through ``to_local`` / ``from_local``.
    """
    from torch.distributed.tensor import DTensor, Partial
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    if any(isinstance(pl, Partial) for pl in x.placements):
        raise ValueError(
            f"dropout of a DTensor with placements {x.placements}: partial sums are not values "
            "yet; redistribute to Shard or Replicate first"
        )
    mesh, placements = x.device_mesh, x.placements
    _, global_offset = compute_local_shape_and_global_offset(x.shape, mesh, placements)
    out = block_dropout(
        x.to_local(), p, scale, global_shape=x.shape, shard_offset=global_offset, dims=dims,
        seed=block_key(seed, generator), offset=offset, backend=backend,
    )  # fmt: skip
    return DTensor.from_local(out, mesh, placements, run_check=False, shape=x.shape,
                              stride=x.stride())  # fmt: skip
