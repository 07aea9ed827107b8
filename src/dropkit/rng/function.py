"""Elementwise Philox dropout as a ``torch.autograd.Function``: every autograd mode works.

``Dropout.apply(x, seed, offset, p, scale, backend)`` is ``where(keep, x * scale, 0)`` with the
Philox mask of positions ``offset + i`` (``i`` the logical row-major index). It is linear in
``x`` with a mask that is a pure function of ``(seed, offset, shape)``, so

* backward (reverse mode): ``dx = keep * scale * dy``, the same op on ``dy`` (mask regenerated,
  only the 0-d seed is kept), and twice-differentiable because backward calls ``apply`` again;
* jvp (forward mode): tangent ``= keep * scale * t``, the same op on ``t``;
* vmap: the op is a pure function of ``(x, seed)``. A seed drawn inside
  ``vmap(randomness="different")`` is batched, and the batch is then dropped as one tensor
  (entry ``b`` takes positions ``offset + b * numel + i``: one mask per entry); an unbatched
  seed (``randomness="same"``, an explicit ``seed=``, or backward replaying the forward's mask,
  e.g. under ``jacrev``) gives every entry the same mask. ``randomness="error"`` raises at the
  seed draw, as torch's random ops do.

This is what ``torch.func.grad/vjp/jacrev/jvp/vmap`` need (a ``setup_context`` Function with a
``vmap`` rule); a ``torch.library`` custom op has no forward-AD or vmap rule. Under
``torch.compile`` (which does not trace a custom ``jvp``) dropkit calls the opaque custom op
:func:`dropkit.rng.ops.philox_dropout` instead.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as _fwd_ad
from torch import Tensor

from .ops import dropout_kernel

_SingleLevel = torch.autograd.function._SingleLevelFunction


_functorch_active = torch._C._are_functorch_transforms_active
_grad_enabled = torch.is_grad_enabled


class PhiloxDropout(torch.autograd.Function):
    """``where(keep, x * scale, 0)``; backward, jvp and vmap regenerate the same mask."""

    @classmethod
    def call(cls, x: Tensor, seed: Tensor, offset: int, p: float, scale: float, backend: str):
        """``apply`` for eager code, with the Python per call cut to the minimum.

        Outside ``torch.func`` transforms and forward-mode AD, a call that records a graph goes
        through :class:`_EagerDropout` (the classic ``forward(ctx, ...)`` form, which torch runs
        without binding arguments or calling ``setup_context``), and a call that records
        nothing runs the kernel directly. The masks, and what backward regenerates, are the same
        on every route.
        """
        if x.is_meta:  # shapes only (deferred init): no seed is ever read
            return torch.empty_like(x)
        if _functorch_active() or _fwd_ad._current_level >= 0:
            return cls.apply(x, seed, offset, p, scale, backend)
        if x.requires_grad and _grad_enabled():
            return _eager_apply(x, seed, offset, p, scale, backend)
        return dropout_kernel(x, int(seed), offset, p, scale, backend)  # no graph to record

    @staticmethod
    def forward(x: Tensor, seed: Tensor, offset: int, p: float, scale: float, backend: str):
        if x.device.type == "meta":
            return torch.empty_like(x)
        return dropout_kernel(x, int(seed), offset, p, scale, backend)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, seed, offset, p, scale, backend = inputs
        ctx.save_for_backward(seed)  # 8 bytes: the mask is regenerated, never stored
        ctx.save_for_forward(seed)
        ctx.args = (offset, p, scale, backend)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (seed,) = ctx.saved_tensors
        return PhiloxDropout.call(grad, seed, *ctx.args), None, None, None, None, None

    @staticmethod
    def jvp(ctx, x_t: Tensor, *_):
        (seed,) = ctx.saved_tensors
        return PhiloxDropout.apply(x_t, seed, *ctx.args)

    @staticmethod
    def vmap(info, in_dims, x, seed, offset, p, scale, backend):
        x_dim, seed_dim = in_dims[0], in_dims[1]
        if x_dim is None:  # the input is shared: every entry sees it
            x = x.unsqueeze(0).expand(info.batch_size, *x.shape)
            x_dim = 0
        x = x.movedim(x_dim, 0)
        if seed_dim is not None:
            # A seed drawn inside vmap(randomness="different"): one per entry. The batch is
            # dropped as one tensor keyed by the first, so entry b takes positions
            # offset + b * numel + i: a different mask per entry.
            seed = seed.select(seed_dim, 0)
            return PhiloxDropout.apply(x, seed, offset, p, scale, backend), 0
        # One seed for the batch (randomness="same", an explicit seed, or a backward replaying
        # the forward's mask): the op is deterministic, so every entry gets the same mask.
        keep = PhiloxDropout.apply(torch.ones_like(x[0]), seed, offset, p, 1.0, backend) != 0
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return torch.where(keep, x * scale, zero), 0


class _EagerDropout(torch.autograd.Function):
    """Plain eager reverse mode of :class:`PhiloxDropout` (see :meth:`PhiloxDropout.call`).

    Only the 0-d seed (saved) and the call's scalars are kept on the node; backward regenerates the
    mask through :meth:`PhiloxDropout.call`, so a double backward (``create_graph=True``)
    records the op again. Never used under ``torch.func`` or forward-mode AD (it has no
    ``setup_context``, ``jvp`` or ``vmap``).
    """

    @staticmethod
    def forward(ctx, x: Tensor, seed: Tensor, offset: int, p: float, scale: float, backend: str):
        ctx.save_for_backward(seed)  # 8 bytes: the mask is regenerated, never stored
        ctx.args = (offset, p, scale, backend)
        return dropout_kernel(x, int(seed), offset, p, scale, backend)

    @staticmethod
    def backward(ctx, grad: Tensor):
        # The key is read back from the saved tensor, not kept as an int: saved-tensor hooks
        # (activation checkpointing, offloading) decide what backward sees, as for any op.
        (seed,) = ctx.saved_tensors
        if grad.requires_grad and _grad_enabled():  # create_graph: record the op again
            return PhiloxDropout.call(grad, seed, *ctx.args), None, None, None, None, None
        dx = dropout_kernel(grad, int(seed), *ctx.args)
        return dx, None, None, None, None, None


# torch's Python ``Function.apply`` only unwraps dead functorch wrappers outside transforms;
# the C++ apply underneath is all a plain eager call needs.
_eager_apply = super(_SingleLevel, _EagerDropout).apply
