"""The replicated batch of :func:`dropkit.mc.predict`: ``k`` sample-major copies of ``n`` rows.

While a forward runs on such a batch, :func:`replicated` says so, and the MC fast paths
(:func:`dropkit.mc.fast.stacked_rnn`, :func:`dropkit.mc.attention.self_attention`) compute
what comes before the first dropout once, on one copy, after :func:`copies` has checked that
their input really holds ``k`` equal copies (the declaration is a hint, never trusted).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

#: ``(k, n)`` while :func:`predict` runs a forward on ``k`` sample-major copies of ``n`` rows.
_REPLICAS: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "dropkit_mc_replicas", default=None
)


@contextlib.contextmanager
def replicated(k: int, n: int) -> Iterator[None]:
    """Declare that forwards in the block run on ``k`` sample-major copies of ``n`` rows."""
    token = _REPLICAS.set((k, n) if k > 1 else None)
    try:
        yield
    finally:
        _REPLICAS.reset(token)


def current() -> tuple[int, int] | None:
    """``(k, n)`` inside :func:`replicated`, else None."""
    return _REPLICAS.get()


def copies(t: torch.Tensor, dim: int, k: int, n: int) -> bool:
    """Whether ``t`` holds ``k`` equal sample-major copies of ``n`` rows along ``dim``. The
    first row of the second copy is compared first, so a batch that differs is told in
    O(row), not O(batch)."""
    if k <= 1 or t.dim() <= dim or t.shape[dim] != k * n:
        return False
    if not torch.equal(t.select(dim, n), t.select(dim, 0)):
        return False
    blocks = t.unflatten(dim, (k, n))
    return torch.equal(blocks, blocks.narrow(dim, 0, 1).expand_as(blocks))
