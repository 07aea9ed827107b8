"""Tensor-parallel dropout: a shard's mask is its block of the unsharded tensor's mask.

A shard holding the block at global coordinates ``(o_0, ..., o_{k-1})`` of a tensor of global
shape ``(G_0, ..., G_{k-1})`` takes, for its element ``(i_0, ...)``, Philox position
``offset + sum_d (o_d + i_d) * S_d`` (``S`` the row-major strides of the global shape; see
:mod:`dropkit.rng.shard`). After gathering, the shards' outputs are exactly dropout of the
whole tensor under the same key; replicated tensors get the same mask on every rank. No RNG
tracker is needed.

* :func:`dtensor_dropout` (and every dropkit ``Dropout`` module or ``dropout`` call given a
  DTensor) reads the coordinates from a ``torch.distributed.tensor`` DTensor.
* :func:`dropout_shard` takes them explicitly (``global_shape``, ``shard_offset``) for plain
  tensors, e.g. Megatron-style code that keeps its own shards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dropkit.functional import dropout
from dropkit.functional._validation import check_input, check_p
from dropkit.functional.mask import keep_scale
from dropkit.rng.shard import block_dropout, block_key, is_dtensor, shard_words

__all__ = ["dropout_shard", "dtensor_dropout", "shard_words"]


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
    x = check_input(input, "dropout_shard")
    p = check_p(p, "dropout_shard")
    if p == 0.0 or not training:
        return x
    return block_dropout(
        x, p, keep_scale(p), global_shape=global_shape, shard_offset=shard_offset,
        seed=block_key(seed, generator), offset=offset, backend=backend,
    )  # fmt: skip


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
    """Dropout of a DTensor (or a plain tensor): ``dropkit.functional.dropout``, named for
    tensor-parallel code. Each rank drops its local shard with its block of the global mask and
    the result keeps the mesh and placements; after ``full_tensor()`` it equals dropout of the
    full tensor with the same key.

    ``Shard(d)`` (hidden dim ``Shard(-1)``, sequence dim ``Shard(1)``, ...) and ``Replicate``
    placements on any device mesh; ``Partial`` raises (reduce it first).

    Shape: any ``(*)``; output the same global shape and placements.
    """
    if not is_dtensor(input):
        check_input(input, "dtensor_dropout")
    return dropout(input, p, training, seed=seed, offset=offset, backend=backend,
                   generator=generator)  # fmt: skip
