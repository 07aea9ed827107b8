"""Alpha dropout and feature alpha dropout for self-normalising (SELU) networks.

Klambauer et al. 2017, "Self-Normalizing Neural Networks" (arXiv:1706.02515), section 3.
"""

from __future__ import annotations

import torch

from dropkit.reference.alpha import ALPHA_PRIME, alpha_dropout_affine
from dropkit.rng.backend import resolve

from ._validation import check_input, check_p
from .mask import bernoulli_mask, mask_shape, resolve_seed, scaled_keep_mask


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
    return bernoulli_mask(shape, p, device=device, seed=seed, offset=offset, backend=backend)


def _alpha(
    x: torch.Tensor, p: float, training: bool, inplace: bool, rng: dict, dims
) -> torch.Tensor:
    if not training:
        return x
    seed, offset = resolve_seed(rng["seed"], rng["offset"], rng["generator"])
    a, b = alpha_dropout_affine(p)
    if a == 0.0:  # p = 1: everything dropped; zeros with zero gradient, as torch
        nothing = torch.zeros((), dtype=torch.bool, device=x.device)
        return x.masked_fill_(~nothing, 0) if inplace else torch.where(nothing, x, 0.0)
    if inplace:
        keep = _keep(seed, mask_shape(x.shape, dims), p, x.device, offset, rng["backend"])
        return x.masked_fill_(~keep, ALPHA_PRIME).mul_(a).add_(b)
    backend = resolve(x.device, rng["backend"])
    return _alpha_op(x, seed, offset, p, list(mask_shape(x.shape, dims)), backend)


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
    check_input(x, "alpha_dropout", inplace=inplace)
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
    seed_t, offset = resolve_seed(seed, offset, generator)
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
