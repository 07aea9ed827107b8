"""Bernoulli dropout with a configurable mask geometry: the op under every preset.

Hinton et al. 2012 (arXiv:1207.0580); Srivastava et al. 2014 (JMLR 15). Mask sharing along
``broadcast_dims`` is Keras' ``noise_shape`` / flax's ``broadcast_dims``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dropkit.rng.backend import draw_key, resolve
from dropkit.rng.function import PhiloxDropout
from dropkit.rng.kernels import numba_available
from dropkit.rng.ops import philox_dropout
from dropkit.rng.shard import dtensor_dropout, is_dtensor

from ._validation import check_input, check_p, plain_call
from .mask import bernoulli_mask, keep_scale, mask_shape, masked_scale, resolve_seed, shared_dims

_NUMBA = numba_available()
_is_compiling = torch.compiler.is_compiling


def scale_all(x: torch.Tensor, scale: float, *, inplace: bool = False) -> torch.Tensor:
    """``x * scale`` (in place with ``inplace``); exact zeros, never NaN, when ``scale == 0``."""
    if scale == 0.0:
        nothing_kept = torch.zeros((), dtype=torch.bool, device=x.device)
        return masked_scale(x, nothing_kept, 0.0, inplace=inplace)
    return x.mul_(scale) if inplace else x * scale


def elementwise(
    x: torch.Tensor,
    p: float,
    scale: float,
    *,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``where(keep, x * scale, 0)`` with the elementwise Philox mask, autograd in every mode.

    The shared engine of the elementwise variants (dropout, alpha dropout): one fused kernel,
    the mask regenerated in backward/jvp, vmap rules; the opaque custom op under
    ``torch.compile``.
    """
    if seed is None and offset == 0:
        seed_t, offset = draw_key(generator, 0, x.numel())
    else:
        seed_t, offset = resolve_seed(seed, offset, generator, x.numel())
    device = x.device
    be = "numba" if backend is None and device.type == "cpu" and numba_available() else None
    be = be or resolve(device, backend)
    if torch.compiler.is_compiling():
        return philox_dropout(x, seed_t, offset, p, scale, be)
    return PhiloxDropout.call(x, seed_t, offset, p, scale, be)


def dropout(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    inverted: bool = True,
    broadcast_dims: Sequence[int] = (),
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Dropout: zero elements with probability ``p``, sharing the mask along ``broadcast_dims``.

    With :math:`q = 1 - p` and :math:`m \sim \mathrm{Bernoulli}(q)` of the input's shape with
    ``broadcast_dims`` set to 1:

    * inverted (default): train :math:`y = m \odot x / q`, eval :math:`y = x` (``x`` itself);
    * standard (``inverted=False``): train :math:`y = m \odot x`, eval :math:`y = q\,x`.

    The signature is ``torch.nn.functional.dropout``'s (``input, p, training, inplace``,
    positional or keyword) plus dropkit's keyword extras. As in torch, ``p = 0`` and evaluation
    mode return ``input`` itself (also with ``inplace=True`` on a leaf that requires grad).

    ``p = 1`` gives zeros with zero gradient (never NaN, even for ``inf`` inputs). ``training``
    defaults to True for every dropkit functional, as in ``torch.nn.functional.dropout``.

    The mask is counter-based (:mod:`dropkit.rng`): element ``i`` of the row-major flattened
    mask takes Philox stream position ``offset + i``. Elementwise dropout (no
    ``broadcast_dims``) runs as one fused kernel that saves only the seed for backward and
    regenerates the mask there: 0 bytes per element between forward and backward. Dropping rows
    ``a:b`` with ``offset = a * row_size`` gives exactly rows ``a:b`` of dropping the whole
    tensor (sharding-invariant). For a non-contiguous input (channels_last, transposed) ``i`` is
    still the *logical* row-major index, and the output keeps the input's strides when the input
    is dense (torch's ``preserve_format`` rule).

    Autograd works in every mode: backward, double backward, forward-mode AD (tangent = the same
    mask times ``scale`` times the tangent), ``torch.func.grad/vjp/jacrev/jvp`` and ``vmap``
    (``randomness="different"``: one mask per entry; ``"same"``: one mask for all).

    Shape: input any shape ``(*)``; output the same shape, dtype, device and strides.

    Args:
        input: floating-point tensor.
        p: drop probability in [0, 1].
        training: apply dropout (True) or the evaluation rule (False).
        inplace: write the result into ``input`` (not allowed on a leaf that requires grad when
            anything is dropped).
        inverted: scale by 1/q in training (True) or by q in evaluation (False).
        broadcast_dims: dims along which one mask value is shared (negative allowed).
        seed: Philox key, an int in [0, 2^63) or a 0-d int64 tensor; default: a fresh draw from
            ``generator`` (or torch's global generator), so ``torch.manual_seed`` reproduces runs.
        offset: stream position of element 0 (int >= 0).
        backend: ``"numba"`` (CPU default), ``"triton"`` (CUDA default), ``"reference"`` (NumPy)
            or ``"torch"`` (torch's generator: reproducible, not the Philox stream).
        generator: where the seed is drawn from when ``seed`` is None.

    Example:
        >>> import torch
        >>> y = dropout(torch.ones(2, 3), p=0.5, broadcast_dims=(1,))
        >>> bool(((y == 0) | (y == 2)).all() and (y == y[:, :1]).all())
        True
    """
    if (
        plain_call(training, p, seed, offset, backend, generator)
        and not inplace
        and inverted
        and not broadcast_dims
        and type(input) is torch.Tensor
        and input.is_floating_point()
        and input.is_cpu
        and _NUMBA
        and not _is_compiling()
    ):  # the common call, with nothing to validate or resolve: straight to the kernel
        seed_t, offset = draw_key(None, 0, input.numel())
        return PhiloxDropout.call(input, seed_t, offset, p, 1.0 / (1.0 - p), "numba")
    x = check_input(input, "dropout")
    p = check_p(p, "dropout")
    if p == 0.0 or (not training and inverted):
        return x
    if not training:
        return scale_all(x, 1.0 - p, inplace=inplace)
    if inplace:
        check_input(x, "dropout", inplace=True)
    scale = keep_scale(p) if inverted else 1.0
    dims = shared_dims(x.shape, broadcast_dims, "dropout") if broadcast_dims else ()
    if is_dtensor(x):  # tensor parallel: each shard its block of the whole tensor's mask
        out = dtensor_dropout(x, p, scale, dims, seed=seed, offset=offset, backend=backend,
                              generator=generator)  # fmt: skip
        return x.copy_(out) if inplace else out
    if not dims:  # elementwise: one fused pass, mask regenerated in backward
        out = elementwise(
            x, p, scale, seed=seed, offset=offset, backend=backend, generator=generator
        )
        return x.copy_(out) if inplace else out
    keep = bernoulli_mask(
        mask_shape(x.shape, dims), p, device=x.device, generator=generator, seed=seed,
        offset=offset, backend=backend,
    )  # fmt: skip
    return masked_scale(x, keep, scale, inplace=inplace)
