"""Alpha dropout and feature alpha dropout for self-normalising (SELU) networks.

Klambauer et al. 2017, "Self-Normalizing Neural Networks" (arXiv:1706.02515), section 3.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.autograd.forward_ad as _fwd_ad

from dropkit.reference.alpha import ALPHA_PRIME, alpha_dropout_affine
from dropkit.rng.backend import draw_key, resolve
from dropkit.rng.function import PhiloxDropout
from dropkit.rng.kernels import cpu_kernels, numba_available
from dropkit.rng.ops import cached_threshold

from ._validation import check_input, check_p, plain_call
from .mask import (
    _mask_value,
    batch_first,
    bernoulli_mask,
    eager_cpu,
    eager_keep_mask,
    eager_seed,
    mask_shape,
    resolve_seed,
    scaled_keep_mask,
)

_NUMBA = numba_available()
_is_compiling = torch.compiler.is_compiling
_functorch_active = torch._C._are_functorch_transforms_active
#: dtypes of the eager fast paths (numba kernels exist for each, half types on their bits).
_EAGER_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
#: :func:`alpha_dropout_affine` memoised for the eager fast paths (the same rates recur).
_affine = functools.lru_cache(maxsize=256)(alpha_dropout_affine)


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
        and x.dtype in _EAGER_DTYPES
        and not _functorch_active()
        and _fwd_ad._current_level < 0
    ):  # plain eager CPU: numba masks, the mask regenerated by the dropout kernel in backward
        if x.requires_grad and torch.is_grad_enabled():
            return _eager_alpha_apply(x, seed, offset, p, backend)
        return _alpha_eager(x, int(seed), offset, p)
    return _AlphaDropout.apply(x, seed, offset, p, backend)


_FUSED = (torch.float32, torch.float64)
#: half types with a fused kernel on their bits: True for bfloat16, False for float16
_FUSED_HALF = {torch.bfloat16: True, torch.float16: False}


def _alpha_eager(x: torch.Tensor, seed: int, offset: int, p: float) -> torch.Tensor:
    """:func:`_alpha_formula` under the Philox mask of ``x``'s shape, without autograd: the
    fused numba pass for a contiguous input (float32/float64 on the data, bfloat16/float16 on
    its bits), else the formula's own torch ops (the same roundings, the same output strides)
    on a numba-filled keep mask, the two scalar steps in place (one output-sized buffer
    besides the mask)."""
    if x.dtype in _FUSED and x.is_contiguous():
        return _alpha_numba(x, seed, offset, p)
    if x.dtype in _FUSED_HALF and x.is_contiguous():
        return _alpha_numba_half(x, seed, offset, p)
    a, b = _affine(p)
    keep = eager_keep_mask(tuple(x.shape), seed, offset, p)
    return torch.where(keep, x, _alpha_prime(x.dtype)).mul_(a).add_(b)


@functools.lru_cache(maxsize=8)
def _alpha_prime(dtype: torch.dtype) -> torch.Tensor:
    """alpha' as a 0-d CPU tensor of ``dtype``: the value ``where(keep, x, alpha')`` converts
    the Python scalar to (a wrapped scalar costs more per call); a normal tensor even when made
    under ``torch.inference_mode()``."""
    with torch.inference_mode(False):
        return torch.tensor(ALPHA_PRIME, dtype=dtype)


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


@functools.lru_cache(maxsize=64)
def _half_constants(dtype: torch.dtype, p: float) -> tuple[int, float]:
    """alpha' as ``dtype``'s bits and ``b`` rounded to ``dtype`` (as a float): the values
    torch's ``where(keep, x, alpha')`` and ``add_(b)`` use on a ``dtype`` tensor."""
    with torch.inference_mode(False):
        fill = int(torch.tensor(ALPHA_PRIME, dtype=dtype).view(torch.int16).item()) & 0xFFFF
        return fill, float(torch.tensor(_affine(p)[1], dtype=dtype))


def _bits(t: torch.Tensor) -> np.ndarray:
    return t.view(torch.int16).numpy().view(np.uint16).reshape(-1)


def _alpha_numba_half(x: torch.Tensor, seed: int, offset: int, p: float) -> torch.Tensor:
    """:func:`_alpha_numba` for bfloat16/float16: the fused kernel on the data's bits, with
    torch's roundings (the product and the sum each rounded to the type)."""
    a = _affine(p)[0]
    fill, b = _half_constants(x.dtype, p)
    out = torch.empty_like(x)
    src = _bits(x.detach() if x.requires_grad else x)
    cpu_kernels().alpha_affine_half_kernel(
        src, _bits(out), seed, offset, 0, cached_threshold(p), fill, a, b, _FUSED_HALF[x.dtype]
    )
    return out


class _EagerAlpha(torch.autograd.Function):
    """Plain eager reverse mode of :class:`_AlphaDropout` (no ``torch.func``, no forward AD):
    the classic ``forward(ctx, ...)`` form; backward is ``where(keep, dy * a, 0)``, the
    elementwise dropout kernel with scale ``a`` on the regenerated mask (for half types the
    half kernel: ``dy * a`` in float32, rounded once, as torch's ``dy * a`` rounds it)."""

    @staticmethod
    def forward(ctx, x, seed, offset, p, backend):
        ctx.save_for_backward(seed)  # the mask is regenerated in backward, never stored
        ctx.args = (offset, p, _affine(p)[0], backend)
        return _alpha_eager(x, int(seed), offset, p)

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
    if (
        plain_call(training, p, seed, offset, backend, generator)
        and not inplace
        and eager_cpu(input)
        and input.dtype in _EAGER_DTYPES
        and _fwd_ad._current_level < 0
    ):  # the common call, with nothing to validate or resolve: straight to the kernels
        if input.requires_grad and torch.is_grad_enabled():  # backward needs the seed tensor
            seed_t, start = draw_key(None, 0, input.numel())
            return _eager_alpha_apply(input, seed_t, start, p, "numba")
        return _alpha_eager(input, *eager_seed(input.numel()), p)
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
    if (
        plain_call(training, p, seed, offset, backend, generator)
        and not inplace
        and eager_cpu(input)
        and input.dtype in _EAGER_DTYPES
        and input.dim() >= 2
    ):  # the common call: draw, fill the (N, C) gain and shift, one broadcast multiply-add
        n, c = input.shape[0], input.shape[1]
        seed, start = eager_seed(n * c)
        gain, shift = _feature_affine(input, (n, c), seed, start, p)
        return (input * gain).add_(shift)
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
    if (
        input.is_cpu
        and input.dtype in _EAGER_DTYPES
        and backend in (None, "numba")
        and _NUMBA
        and not _functorch_active()
        and not _is_compiling()
    ):  # eager CPU: the same gain and shift, filled by numba
        gain, shift = _feature_affine(input, tuple(input.shape[:2]), int(seed_t), offset, p)
        return (input.mul_(gain) if inplace else input * gain).add_(shift)
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


@functools.lru_cache(maxsize=256)
def _feature_tables(p: float, dtype: torch.dtype) -> tuple[int, np.ndarray, np.ndarray]:
    """Keep threshold and the two lookup tables of feature alpha dropout in ``dtype``, indexed
    by the keep decision (0 dropped, 1 kept), as NumPy arrays (uint16 bits for half types):
    gain ``[0, a]`` with ``a`` rounded to ``dtype`` as ``keep * a`` rounds it, and shift
    ``[alpha' * a + b, b]`` with the elementwise formula's two roundings, each value computed by
    the torch expression of the general path."""
    a, b = alpha_dropout_affine(p)
    np_dtype, gain = _mask_value(a, dtype)
    kept = torch.full((), b, dtype=dtype)
    dropped = torch.full((), ALPHA_PRIME, dtype=dtype) * a + b
    if np_dtype == np.uint16:
        shift = [t.view(torch.int16).item() & 0xFFFF for t in (dropped, kept)]
    else:
        shift = [dropped.item(), kept.item()]
    gains = np.array([0, gain], dtype=np_dtype)
    return cached_threshold(p), gains, np.array(shift, dtype=np_dtype)


def _feature_affine(
    x: torch.Tensor, lead: tuple[int, int], seed: int, offset: int, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The per-(sample, channel) gain :math:`A = a\,m` and shift :math:`B` (``b`` where kept,
    :math:`\alpha' a + b` where dropped) of shape ``(N, C, 1, ..., 1)`` in ``x``'s dtype, for
    an eager CPU ``x`` (``0 < p < 1``): one numba pass writes the keep decisions (mask element
    ``n C + c`` at stream position ``offset + n C + c``, as :func:`scaled_keep_mask`), and
    ``A`` and ``B`` are looked up from them. Both are ``N C`` values, so the output is one
    broadcast ``x * A + B``."""
    thr, gains, shifts = _feature_tables(p, x.dtype)
    keep = np.empty(lead + (1,) * (x.dim() - 2), dtype=np.uint16)
    cpu_kernels().scaled_keep_kernel(keep.reshape(-1), seed, offset, 0, thr, 1)
    gain, shift = torch.from_numpy(gains.take(keep)), torch.from_numpy(shifts.take(keep))
    if gains.dtype == np.uint16:
        return gain.view(x.dtype), shift.view(x.dtype)
    return gain, shift
