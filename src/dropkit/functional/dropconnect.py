"""DropConnect: Bernoulli dropout on the weights of a linear map instead of its outputs.

Wan et al. 2013, "Regularization of Neural Networks using DropConnect" (ICML). The paper draws
a mask per example and moment-matches at inference; like common practice (AWD-LSTM's
WeightDrop, baal) and :class:`dropkit.reference.DropConnectLinear`, this draws one weight mask
per call, rescales by 1/q and uses the plain weights in evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF

from dropkit.rng.backend import draw_key
from dropkit.rng.function import PhiloxDropout
from dropkit.rng.kernels import numba_available

from ._validation import check_input, check_p, plain_call
from .mask import bernoulli_mask, keep_scale, masked_scale

_NUMBA = numba_available()
_is_compiling = torch.compiler.is_compiling
_functorch_active = torch._C._are_functorch_transforms_active
#: Plain tensors and parameters (subclasses such as DTensor take the general path).
_PLAIN = (torch.Tensor, torch.nn.Parameter)
_KERNEL_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def dropconnect_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Linear map with a Bernoulli mask on its weight matrix.

    Train :math:`y = x (W \odot M)^\top / q + b` with :math:`M_{ij} \sim \mathrm{Bernoulli}(q)`,
    ``M = bernoulli_mask(weight.shape, p)`` (one mask per call, shared by the batch); eval
    :math:`y = x W^\top + b` (``torch.nn.functional.linear``). The bias is never dropped.
    Gradients: :math:`dx = dy\,\tilde W`, :math:`dW = (dy^\top x) \odot M / q` with
    :math:`\tilde W = W \odot M / q`. ``p = 1`` gives the bias alone, with zero ``dx`` and
    ``dW`` (never NaN). Wan et al. 2013 (ICML).

    Shape: x ``(*, in_features)``; weight ``(out_features, in_features)``; bias
    ``(out_features,)``; output ``(*, out_features)``.

    Example:
        >>> import torch
        >>> w = torch.ones(3, 4)
        >>> y = dropconnect_linear(torch.ones(2, 4), w, p=0.5)  # each entry: 2 * (kept in row)
        >>> y.shape, bool((y == y.round()).all())
        (torch.Size([2, 3]), True)
    """
    if (
        plain_call(training, p, seed, offset, backend, generator)
        and type(weight) in _PLAIN
        and weight.is_cpu
        and weight.dtype in _KERNEL_DTYPES
        and weight.dim() == 2
        and weight.is_contiguous()
        and type(x) is torch.Tensor
        and x.is_floating_point()
        and _NUMBA
        and not _functorch_active()
        and not _is_compiling()
    ):
        # The common call: W * M / q is elementwise dropout of the weight, so the fused kernel
        # writes it in one pass from the Philox mask of weight.shape (the bits
        # bernoulli_mask(weight.shape) gives) and backward regenerates the mask: no bool mask
        # and no int64 words are allocated, and autograd keeps only the dropped weight linear
        # needs anyway.
        seed_t, start = draw_key(None, 0, weight.numel())
        dropped = PhiloxDropout.call(weight, seed_t, start, p, 1.0 / (1.0 - p), "numba")
        return TF.linear(x, dropped, bias)
    check_input(x, "dropconnect_linear")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        got = f"shape {tuple(weight.shape)}" if isinstance(weight, torch.Tensor) else "no tensor"
        raise ValueError(
            "dropconnect_linear: weight must be a 2-D tensor of shape (out_features, "
            f"in_features), got {got}"
        )
    check_input(weight, "dropconnect_linear")
    p = check_p(p, "dropconnect_linear")
    if not training:
        return TF.linear(x, weight, bias)
    keep = bernoulli_mask(
        weight.shape,
        p,
        device=weight.device,
        seed=seed,
        offset=offset,
        backend=backend,
        generator=generator,
    )
    return TF.linear(x, masked_scale(weight, keep, keep_scale(p)), bias)
