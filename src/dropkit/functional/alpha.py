"""Alpha dropout and feature alpha dropout for self-normalising (SELU) networks.

Klambauer et al. 2017, "Self-Normalizing Neural Networks" (arXiv:1706.02515), section 3.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as _fwd_ad

from dropkit.reference.alpha import ALPHA_PRIME, alpha_dropout_affine
from dropkit.rng.backend import resolve
from dropkit.rng.function import PhiloxDropout
from dropkit.rng.kernels import cpu_kernels
from dropkit.rng.ops import cached_threshold

from ._validation import check_input, check_p
from .mask import batch_first, bernoulli_mask, mask_shape, resolve_seed, scaled_keep_mask


@torch.library.custom_op("dropkit::alpha_dropout", mutates_args=())
def _alpha_op(
    x: torch.Tensor, seed: torch.Tensor, offset: int, p: float, shape: list[int], backend: str
) -> torch.Tensor:
    """``a * where(keep, x, alpha') + b`` with ``keep`` of ``shape`` from the Philox stream."""
    a, b = alpha_dropout_affine(p)
    return torch.where(_keep(seed, shape, p, x.device, offset, backend), x, ALPHA_PRIME) * a + b


@_alpha_op.register_fake
def _(x, seed, offset, p, shape, backend):
    return torch.empty_like(x)


def _alpha_setup(ctx, inputs, output) -> None:
    x, seed, offset, p, shape, backend = inputs
    ctx.save_for_backward(seed)  # the mask is regenerated in backward, never stored
    ctx.args = (shape, p, x.device, offset, backend)


def _alpha_backward(ctx, grad):
    (seed,) = ctx.saved_tensors
    a, _ = alpha_dropout_affine(ctx.args[1])
    zero = torch.zeros((), dtype=grad.dtype, device=grad.device)
    return torch.where(_keep(seed, *ctx.args), grad * a, zero), None, None, None, None, None


_alpha_op.register_autograd(_alpha_backward, setup_context=_alpha_setup)


def _keep(seed, shape, p, device, offset, backend) -> torch.Tensor:
    if torch.device(device).type == "meta":
        return torch.empty(shape, dtype=torch.bool, device=device)
    return bernoulli_mask(shape, p, device=device, seed=seed, offset=offset, backend=backend)


def _alpha_formula(x, keep, a, b):
    return torch.where(keep, x, ALPHA_PRIME) * a + b


class _KeepScale(torch.autograd.Function):
    """``where(keep, g * scale, 0)`` with the elementwise mask of ``g``'s shape: alpha dropout's
    backward and jvp (linear, so its own backward and jvp are itself)."""

    @staticmethod
    def forward(g, seed, offset, p, scale, backend):
        keep = _keep(seed, list(g.shape), p, g.device, offset, backend)
        return torch.where(keep, g * scale, torch.zeros((), dtype=g.dtype, device=g.device))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1])
        ctx.save_for_forward(inputs[1])  # jvp regenerates too
        ctx.args = inputs[2:]

    @staticmethod
    def backward(ctx, grad):
        (seed,) = ctx.saved_tensors
        return _KeepScale.apply(grad, seed, *ctx.args), None, None, None, None, None

    @staticmethod
    def jvp(ctx, g_t, *_):
        (seed,) = ctx.saved_tensors
        return _KeepScale.apply(g_t, seed, *ctx.args)

    @staticmethod
    def vmap(info, in_dims, g, seed, offset, p, scale, backend):
        g, seed = batch_first(info, in_dims, g, seed)
        if info.randomness == "different":
            return _KeepScale.apply(g, seed, offset, p, scale, backend), 0
        keep = _keep(seed, list(g.shape[1:]), p, g.device, offset, backend)
        return torch.where(keep, g * scale, torch.zeros((), dtype=g.dtype, device=g.device)), 0


class _AlphaDropout(torch.autograd.Function):
    """Elementwise alpha dropout; backward and jvp regenerate the mask (only the seed is saved);
    ``vmap`` numbers a batch as :class:`dropkit.functional.gaussian._GaussianDropout` does."""

    @staticmethod
    def forward(x, seed, offset, p, backend):
        a, b = alpha_dropout_affine(p)
        return _alpha_formula(x, _keep(seed, list(x.shape), p, x.device, offset, backend), a, b)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1])  # the mask is regenerated in backward, never stored
        ctx.save_for_forward(inputs[1])
        ctx.args = inputs[2:]

    @staticmethod
    def backward(ctx, grad):
        (seed,) = ctx.saved_tensors
        offset, p, backend = ctx.args
        a, _ = alpha_dropout_affine(p)
        return _KeepScale.apply(grad, seed, offset, p, a, backend), None, None, None, None

    @staticmethod
    def jvp(ctx, x_t, *_):
        (seed,) = ctx.saved_tensors
        offset, p, backend = ctx.args
        return _KeepScale.apply(x_t, seed, offset, p, alpha_dropout_affine(p)[0], backend)

    @staticmethod
    def vmap(info, in_dims, x, seed, offset, p, backend):
        x, seed = batch_first(info, in_dims, x, seed)
        if info.randomness == "different":
            return _AlphaDropout.apply(x, seed, offset, p, backend), 0
        a, b = alpha_dropout_affine(p)
        keep = _keep(seed, list(x.shape[1:]), p, x.device, offset, backend)
        return _alpha_formula(x, keep, a, b), 0


def _alpha(
    x: torch.Tensor, p: float, training: bool, inplace: bool, rng: dict, dims
) -> torch.Tensor:
    if not training or p == 0.0:  # torch returns the input itself here
        return x
    check_input(x, "alpha_dropout", inplace=inplace)
    numel = torch.Size(mask_shape(x.shape, dims)).numel()
    seed, offset = resolve_seed(rng["seed"], rng["offset"], rng["generator"], numel)
    a, b = alpha_dropout_affine(p)
    if a == 0.0:  # p = 1: everything dropped; zeros with zero gradient, as torch
        nothing = torch.zeros((), dtype=torch.bool, device=x.device)
        return x.masked_fill_(~nothing, 0) if inplace else torch.where(nothing, x, 0.0)
    if inplace:
        keep = _keep(seed, mask_shape(x.shape, dims), p, x.device, offset, rng["backend"])
        return x.masked_fill_(~keep, ALPHA_PRIME).mul_(a).add_(b)
    backend = resolve(x.device, rng["backend"])
    if torch.compiler.is_compiling():  # opaque to the compiler, which does not trace a jvp
        return _alpha_op(x, seed, offset, p, list(mask_shape(x.shape, dims)), backend)
    if (
        backend == "numba"
        and x.dtype in _FUSED
        and x.is_contiguous()
        and not _functorch_active()
        and _fwd_ad._current_level < 0
    ):  # plain eager CPU: one fused numba pass each way
        if x.requires_grad and torch.is_grad_enabled():
            return _eager_alpha_apply(x, seed, offset, p, backend)
        return _alpha_numba(x, int(seed), offset, p)
    return _AlphaDropout.apply(x, seed, offset, p, backend)


_FUSED = (torch.float32, torch.float64)
_functorch_active = torch._C._are_functorch_transforms_active


def _alpha_numba(x: torch.Tensor, seed: int, offset: int, p: float) -> torch.Tensor:
    """:func:`_alpha_formula` under the Philox mask, by the fused numba kernel (same roundings:
    ``where(keep, x, alpha') * a``, then ``+ b``, in ``x``'s dtype)."""
    a, b = alpha_dropout_affine(p)
    out = torch.empty_like(x)
    flat = (x.detach() if x.requires_grad else x).numpy().reshape(-1)
    cpu_kernels().alpha_affine_kernel(
        flat, out.numpy().reshape(-1), seed, offset, 0, cached_threshold(p), ALPHA_PRIME, a, b
    )
    return out


class _EagerAlpha(torch.autograd.Function):
    """Plain eager reverse mode of :class:`_AlphaDropout` (no ``torch.func``, no forward AD):
    the classic ``forward(ctx, ...)`` form; backward is ``where(keep, dy * a, 0)``, the
    elementwise dropout kernel with scale ``a`` on the regenerated mask."""

    @staticmethod
    def forward(ctx, x, seed, offset, p, backend):
        ctx.save_for_backward(seed)  # the mask is regenerated in backward, never stored
        ctx.args = (offset, p, alpha_dropout_affine(p)[0], backend)
        return _alpha_numba(x, int(seed), offset, p)

    @staticmethod
    def backward(ctx, grad):
        (seed,) = ctx.saved_tensors
        offset, p, a, backend = ctx.args
        return PhiloxDropout.call(grad, seed, offset, p, a, backend), None, None, None, None


_eager_alpha_apply = super(torch.autograd.function._SingleLevelFunction, _EagerAlpha).apply


def alpha_dropout(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = False,
    inplace: bool = False,
    *,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""SELU-preserving dropout: train :math:`y = a (x \odot m + \alpha' (1 - m)) + b`.

    :math:`m \sim \mathrm{Bernoulli}(q)` elementwise, :math:`\alpha' = -\lambda\alpha \approx
    -1.7581`, :math:`a = (q (1 + p \alpha'^2))^{-1/2}`, :math:`b = -a p \alpha'`; eval
    :math:`y = x`. Keeps mean 0 and variance 1 of standardised inputs. ``p = 1`` gives zeros.
    ``training`` defaults to False, as in ``torch.nn.functional.alpha_dropout`` (a drop-in
    call ``alpha_dropout(x, 0.5)`` must not start adding noise); the modules always pass it.

    Shape: any; output the same.
    """
    x = input
    check_input(x, "alpha_dropout")
    p = check_p(p, "alpha_dropout")
    return _alpha(
        x,
        p,
        training,
        inplace,
        dict(seed=seed, offset=offset, backend=backend, generator=generator),
        (),
    )


def feature_alpha_dropout(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = False,
    inplace: bool = False,
    *,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Alpha dropout with one mask value per (sample, channel): :math:`m` of shape
    ``(N, C, 1, ..., 1)``, otherwise as :func:`alpha_dropout`. Input ``(N, C, *)``, at least
    2 dims. ``training`` defaults to False, as in ``torch.nn.functional.feature_alpha_dropout``.

    The ``N * C`` decisions come from the Philox stream and the output is one broadcast
    :math:`y = x \cdot A + B` with :math:`A = a\,m` and :math:`B = b` (kept) or
    :math:`a\alpha' + b` (dropped), so autograd keeps only the small ``A``.
    """
    check_input(input, "feature_alpha_dropout")
    p = check_p(p, "feature_alpha_dropout")
    if input.dim() < 2:
        raise ValueError(
            "feature_alpha_dropout expects input of shape (N, C, *) (at least 2 dims), got "
            f"{input.dim()} dims with shape {tuple(input.shape)}"
        )
    if not training or p == 0.0:  # torch returns the input itself here
        return input
    check_input(input, "feature_alpha_dropout", inplace=inplace)
    seed_t, offset = resolve_seed(seed, offset, generator, input.shape[:2].numel())
    a, b = alpha_dropout_affine(p)
    if a == 0.0:  # p = 1: everything dropped; zeros with zero gradient, as torch
        nothing = torch.zeros((), dtype=torch.bool, device=input.device)
        return input.masked_fill_(~nothing, 0) if inplace else torch.where(nothing, input, 0.0)
    dims = tuple(range(2, input.dim()))
    keep = scaled_keep_mask(input, dims, p, 1.0, seed=seed_t, offset=offset, backend=backend)
    # Dropped entries get the old elementwise rounding, alpha' * a then + b, in input's dtype.
    dropped = torch.full((), ALPHA_PRIME, dtype=input.dtype, device=input.device) * a + b
    shift = torch.where(
        keep != 0, torch.full((), b, dtype=input.dtype, device=input.device), dropped
    )
    gain = keep * a
    # Two roundings, x * A then + B, as the elementwise formula (addcmul would fuse them).
    return (input.mul_(gain) if inplace else input * gain).add_(shift)
