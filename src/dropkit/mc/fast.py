r"""torch's dropout answered by dropkit's CPU kernel while :func:`dropkit.mc.predict` samples.

On the CPU torch draws a dropout mask with ``bernoulli_`` one element at a time, about ten
times slower than dropkit's fused counter-based kernel (:func:`dropkit.functional.dropout`),
and ``scaled_dot_product_attention`` with ``dropout_p > 0`` leaves its fused kernel for the
math path. Hugging Face models spend most of an MC forward there. Without ``consistent=True``,
:func:`predict` therefore answers, inside its sampling forwards, through a
``TorchFunctionMode``:

* ``torch.nn.functional.dropout(x, p, training=True, inplace)`` (also what ``nn.Dropout``
  calls) with :func:`dropkit.functional.dropout` (same law: keep with probability
  :math:`q = 1 - p`, scale by :math:`1/q`; ``inplace`` honoured);
* ``scaled_dot_product_attention(q, k, v, attn_mask, dropout_p > 0, is_causal, scale,
  enable_gqa)`` with torch's math formula
  :math:`\mathrm{dropout}(\mathrm{softmax}_0(q k^\top s + B))\,v`, ``s = scale`` or
  :math:`1/\sqrt{E}`, ``B`` the additive mask (``-inf`` where a boolean mask or the causal
  mask is False), ``softmax_0`` torch's ``_safe_softmax`` (a row with every key masked gives
  zeros), and the dropout of the first item.

Only floating CPU tensors (not nested) take this path, only with a rate in (0, 1] and
``training=True``; every other call, every other op and every other device runs as torch
runs it. The masks come from the Philox stream with seeds drawn from torch's generator, so
``predict(seed=...)`` still reproduces its draws. torch's own draws inside compiled code
(``nn.MultiheadAttention``'s attention dropout, the RNNs' inter-layer dropout) are not
reached by a function mode and stay torch's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as tF
from torch.overrides import TorchFunctionMode

from dropkit import functional as F

_SAFE_SOFTMAX = getattr(torch.ops.aten, "_safe_softmax", None)


def _cpu_float(*tensors: torch.Tensor | None) -> bool:
    return all(
        t is None
        or (
            isinstance(t, torch.Tensor)
            and t.device.type == "cpu"
            and t.is_floating_point()
            and not t.is_nested
            and t.layout == torch.strided
        )
        for t in tensors
    )


def dropout(input, p=0.5, training=True, inplace=False):
    """``torch.nn.functional.dropout``'s signature; dropkit's kernel where it applies."""
    if training and isinstance(p, float | int) and 0.0 < p <= 1.0 and _cpu_float(input):
        return F.dropout(input, float(p), True, inplace)
    return tF.dropout(input, p, training, inplace)


def _bias(mask, is_causal: bool, q: torch.Tensor, length: int, source: int):
    """The additive mask ``B`` (None when there is none), in ``q``'s dtype."""
    bias = None
    if is_causal:
        keep = torch.ones(length, source, dtype=torch.bool).tril()
        bias = torch.zeros(length, source, dtype=q.dtype).masked_fill_(~keep, -math.inf)
    if mask is not None:
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=q.dtype).masked_fill_(~mask, -math.inf)
        else:
            mask = mask.to(q.dtype)
        bias = mask if bias is None else bias + mask
    return bias


def scaled_dot_product_attention(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
    enable_gqa=False,
):  # fmt: skip
    """``torch.nn.functional.scaled_dot_product_attention``'s signature; with ``dropout_p > 0``
    on the CPU, the math formula of the module notes with dropkit's dropout."""
    mask_ok = attn_mask is None or (
        isinstance(attn_mask, torch.Tensor)
        and attn_mask.device.type == "cpu"
        and not attn_mask.is_nested
        and (attn_mask.dtype == torch.bool or attn_mask.is_floating_point())
    )
    if not (
        dropout_p > 0.0
        and _cpu_float(query, key, value)
        and mask_ok
        and query.dtype == key.dtype == value.dtype
        and query.dim() >= 2
        and _SAFE_SOFTMAX is not None
    ):
        return tF.scaled_dot_product_attention(
            query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
            scale=scale, enable_gqa=enable_gqa,
        )  # fmt: skip
    if enable_gqa and query.dim() >= 3 and key.shape[-3] != query.shape[-3]:
        groups = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(groups, -3)
        value = value.repeat_interleave(groups, -3)
    s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    scores = torch.matmul(query, key.transpose(-2, -1)).mul_(s)
    bias = _bias(attn_mask, is_causal, query, query.shape[-2], key.shape[-2])
    if bias is not None:
        scores = scores + bias
    weights = _SAFE_SOFTMAX(scores, -1)
    weights = F.dropout(weights, float(dropout_p), True, True)
    return torch.matmul(weights, value)


class FastDropout(TorchFunctionMode):
    """While active, ``F.dropout`` and ``F.scaled_dot_product_attention`` calls go to
    :func:`dropout` and :func:`scaled_dot_product_attention`; everything else runs unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is tF.dropout:
            func = dropout
        elif func is tF.scaled_dot_product_attention:
            func = scaled_dot_product_attention
        return func(*args, **(kwargs or {}))
