"""Tensor-parallel dropout: a shard's mask is its block of the unsharded tensor's mask.

dropkit's elementwise mask gives element ``i`` of the row-major flattened tensor the Philox
stream position ``offset + i`` (:mod:`dropkit.rng.philox`). A shard holding the block that
starts at global coordinates ``(o_0, ..., o_{k-1})`` of a tensor of global shape
``(G_0, ..., G_{k-1})`` takes, for its local element ``(i_0, ..., i_{k-1})``, position

    offset + sum_d (o_d + i_d) * S_d,    S_d = G_{d+1} * ... * G_{k-1}

so after gathering, the shards' outputs are exactly dropout of the whole tensor under the same
key; replicated tensors (offset 0 on every dim) get the same mask on every rank. No RNG tracker
is needed. :func:`dropout_shard` is this on plain tensors (you give ``global_shape`` and
``shard_offset``); :func:`dtensor_dropout` reads both from a ``torch.distributed.tensor``
DTensor (``Shard(d)`` and ``Replicate`` placements, any mesh).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from dropkit.functional.mask import keep_scale, masked_scale, random_words
from dropkit.rng import backend as rng_backend
from dropkit.rng.ops import threshold

#: Up to this many separate runs of contiguous positions, each run is one kernel call; above it,
#: the words of the whole span between the first and last position are drawn and gathered.
MAX_RUNS = 32


def _key(seed: int | torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    """The call's key, identical on every rank: ``seed``, else the active stream's next key
    (never row-sharded: the shard offset is explicit), else a draw from ``generator`` or torch's
    generator (which must then be in the same state on every rank)."""
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
    positions (the dims after the last sharded one are whole); few runs are one kernel call
    each, many are drawn as one span and gathered.
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
    strides = [math.prod(glob[d + 1 :]) for d in range(len(glob))]
    # k: the last dim where the block is narrower than the tensor; dims after it are whole.
    k = max((d for d in range(len(glob)) if local[d] != glob[d]), default=0)
    run = local[k] * strides[k] if glob else 1
    base = offset + sum(o * s for o, s in zip(start, strides, strict=True))
    outer = local[:k]
    n_runs = math.prod(outer)
    if n_runs == 0 or run == 0:
        return torch.empty(local, dtype=torch.int64, device=device)
    starts = torch.zeros((), dtype=torch.int64)
    for d, n in enumerate(outer):  # start position of each run, shape `outer`
        starts = starts.unsqueeze(-1) + torch.arange(n, dtype=torch.int64) * strides[d]
    starts = starts.reshape(-1)
    rng = dict(seed=seed, device=device, backend=backend)
    if n_runs <= MAX_RUNS:
        parts = [random_words(run, offset=base + int(s), **rng) for s in starts.tolist()]
        return torch.cat(parts).reshape(local)
    span = int(starts[-1]) + run
    words = random_words(span, offset=base, **rng)
    index = (starts.unsqueeze(1) + torch.arange(run, dtype=torch.int64)).reshape(-1)
    return words[index.to(words.device)].reshape(local)


def dropout_shard(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    global_shape: Sequence[int],
    shard_offset: Sequence[int],
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Inverted dropout of one shard, with the shard's block of the whole tensor's mask.

    ``input`` is the block of a tensor of ``global_shape`` starting at global coordinates
    ``shard_offset``; the result equals ``dropkit.functional.dropout(whole, p, seed=seed,
    offset=offset)`` restricted to that block (bit for bit on the Philox backends). Train:
    :math:`y = m \odot x / (1 - p)`; eval or ``p = 0``: ``input`` itself.

    The key must be the same on every rank: ``seed``, else the active
    :func:`dropkit.rng.stream`'s next key, else a draw from ``generator`` / torch's generator
    (seeded alike on every rank). Autograd: ``torch.where`` with the bool mask.

    Shape: ``input`` ``(*local)``, ``len(local) == len(global_shape) == len(shard_offset)``;
    output the same.

    Example:
        >>> import torch
        >>> from dropkit import functional as F
        >>> x = torch.arange(24.0).reshape(2, 3, 4)
        >>> whole = F.dropout(x, 0.5, seed=3)
        >>> part = dropout_shard(x[:, :, 2:], 0.5, global_shape=(2, 3, 4),
        ...                      shard_offset=(0, 0, 2), seed=3)
        >>> torch.equal(part, whole[:, :, 2:])
        True
    """
    from dropkit.functional._validation import check_input, check_p

    x = check_input(input, "dropout_shard")
    p = check_p(p, "dropout_shard")
    if p == 0.0 or not training:
        return x
    seed_t = _key(seed, generator)
    if p >= 1.0:
        return masked_scale(x, torch.zeros((), dtype=torch.bool, device=x.device), 0.0)
    words = shard_words(
        x.shape, global_shape, shard_offset, seed=seed_t, offset=offset, device=x.device,
        backend=backend,
    )  # fmt: skip
    return masked_scale(x, words >= threshold(p), keep_scale(p))


def dtensor_dropout(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`dropout_shard` of a DTensor: each rank drops its local shard with its block of
    the global mask; returns a DTensor with the same mesh and placements.

    ``Shard(d)`` (hidden dim ``Shard(-1)``, sequence dim ``Shard(1)``, ...) and ``Replicate``
    placements on any device mesh; ``Partial`` raises (reduce it first). After
    ``full_tensor()`` the result equals ``dropkit.functional.dropout`` of the full tensor with
    the same key. A plain tensor is dropped as a whole (one rank's view).

    Shape: any ``(*)``; output the same global shape and placements.
    """
    from torch.distributed.tensor import DTensor, Partial
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    if not isinstance(input, DTensor):
        return dropout_shard(
            input, p, training, global_shape=input.shape, shard_offset=[0] * input.dim(),
            seed=seed, offset=offset, backend=backend, generator=generator,
        )  # fmt: skip
    if any(isinstance(pl, Partial) for pl in input.placements):
        raise ValueError(
            f"dtensor_dropout: placements {input.placements} hold partial sums; dropout needs "
            "the values (redistribute to Shard or Replicate first)"
        )
    mesh, placements = input.device_mesh, input.placements
    _, global_offset = compute_local_shape_and_global_offset(input.shape, mesh, placements)
    local = input.to_local()
    out = dropout_shard(
        local, p, training, global_shape=input.shape, shard_offset=global_offset, seed=seed,
        offset=offset, backend=backend, generator=generator,
    )  # fmt: skip
    if out is local:
        return input
    return DTensor.from_local(
        out, mesh, placements, run_check=False, shape=input.shape, stride=input.stride()
    )
