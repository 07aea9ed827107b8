r"""``nn.MultiheadAttention``'s self-attention for MC sampling on the CPU, without copies.

:func:`self_attention` computes what ``F.multi_head_attention_forward`` computes in training
with ``need_weights=False`` and no masks (Vaswani et al. 2017, eq. 1 and section 3.2.2):

.. math::

    [Q\;K\;V] = x W_{in}^\top + b_{in}, \qquad
    O_h = \mathrm{dropout}_p\!\left(\mathrm{softmax}\!\left(Q_h K_h^\top / \sqrt{D}\right)
    \right) V_h, \qquad y = [O_1 \dots O_H]\, W_{out}^\top + b_{out},

with ``x`` of shape ``(L, N, E)`` (torch's layout inside the function; a ``batch_first``
module passes a transposed view of ``(N, L, E)``), ``H`` heads of ``D = E / H`` features. torch
splits the projection into ``(3, L, N, E)`` and copies it into head-major tensors; here each head
is a strided view of the one projection (``(N, L, D)`` with row stride ``3E``), multiplied by
batched GEMMs straight into head-major buffers, so the only copy is the one that puts the
heads back side by side for ``W_{out}``.

When :func:`dropkit.mc.predict` runs ``k`` sample-major copies of ``n`` rows (a replicated
batch) and the input is checked to hold ``k`` equal copies, everything before the attention
dropout is deterministic and is computed once, on one copy: the projection, the scores and
the softmax. The ``k`` copies of the weights are dropped in a ``(H, n, k L, L)`` buffer, so
that one GEMM per head multiplies all ``k`` of them by the shared ``V_h`` (``k L`` rows
instead of ``k`` products of ``L`` rows). The masks are i.i.d. Bernoulli(1 - p) draws of
dropkit's kernel in the buffer's memory order, the law of the dropout; which element gets
which Philox position differs from torch's layout, which only ``consistent=True`` (a separate
path) pins.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as tF

from . import replicas as _replicas

_SIGNATURE = inspect.signature(tF.multi_head_attention_forward)


def _applies(a: dict) -> bool:
    """Whether the call is the common self-attention this module computes."""
    x = a["query"]
    params = (a["in_proj_weight"], a["in_proj_bias"], a["out_proj_weight"], a["out_proj_bias"])
    return (
        a["training"]
        and not a["need_weights"]
        and a["key"] is x
        and a["value"] is x
        and isinstance(x, torch.Tensor)
        and type(x) is torch.Tensor
        and x.dim() == 3
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.shape[-1] == a["embed_dim_to_check"]
        and a["embed_dim_to_check"] % a["num_heads"] == 0
        and not a["use_separate_proj_weight"]
        and a["in_proj_weight"] is not None
        and a["bias_k"] is None
        and a["bias_v"] is None
        and not a["add_zero_attn"]
        and a["key_padding_mask"] is None
        and a["attn_mask"] is None
        and not a["is_causal"]
        and a["static_k"] is None
        and a["static_v"] is None
        and isinstance(a["dropout_p"], float | int)
        and 0.0 <= a["dropout_p"] < 1.0
        and all(t is None or (t.dtype == x.dtype and t.device.type == "cpu") for t in params)
        and not (
            torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, *params))
        )  # the buffers are written with out=: no graph is recorded
    )


def multi_head_attention(args: tuple, kwargs: dict, dropout, replicas) -> tuple | None:
    """``F.multi_head_attention_forward(*args, **kwargs)`` by :func:`self_attention` when the
    call is a plain self-attention (training, ``need_weights=False``, no masks, packed
    projection, no ``bias_k``/``add_zero_attn``); None otherwise (torch's function runs).
    ``dropout(t, p)`` drops a contiguous tensor in place; ``replicas`` is ``(k, n)`` or None."""
    try:
        bound = _SIGNATURE.bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    a = bound.arguments
    if not _applies(a):
        return None
    out = self_attention(
        a["query"], a["num_heads"], a["in_proj_weight"], a["in_proj_bias"],
        float(a["dropout_p"]), a["out_proj_weight"], a["out_proj_bias"], dropout, replicas,
    )  # fmt: skip
    return out, None


def self_attention(
    x: torch.Tensor,
    num_heads: int,
    in_weight: torch.Tensor,
    in_bias: torch.Tensor | None,
    p: float,
    out_weight: torch.Tensor,
    out_bias: torch.Tensor | None,
    dropout,
    replicas: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Multi-head self-attention of the module notes: ``x`` ``(L, N, E)`` to ``(L, N, E)``
    (a transposed view of a contiguous ``(N, L, E)``, as torch's ``batch_first`` module takes
    it back). ``dropout(t, p)`` drops the contiguous attention weights in place."""
    length, batch, embed = x.shape
    heads = num_heads
    dim = embed // heads
    rows = x.transpose(0, 1)  # (N, L, E), batch-major as the module's caller holds it
    copies, n = 1, batch
    if replicas is not None and _replicas.copies(rows, 0, *replicas):
        copies, n = replicas
        rows = rows[:n]
    qkv = tF.linear(rows, in_weight, in_bias)  # (n, L, 3E)
    scale = 1.0 / math.sqrt(dim)
    scores = torch.empty(heads, n, length, length, dtype=x.dtype)
    for h in range(heads):
        q = qkv[:, :, h * dim : (h + 1) * dim]
        k = qkv[:, :, embed + h * dim : embed + (h + 1) * dim]
        torch.baddbmm(scores[h], q, k.transpose(1, 2), beta=0.0, alpha=scale, out=scores[h])
    weights = torch.softmax(scores, -1)
    del scores
    if copies > 1:  # (H, n, k, L, L): the k copies of each row's weights, one GEMM per head
        weights = weights.unsqueeze(2).expand(heads, n, copies, length, length).contiguous()
    if p > 0.0:
        dropout(weights, p)
    weights = weights.view(heads, n, copies * length, length)
    heads_out = torch.empty(heads, n, copies * length, dim, dtype=x.dtype)
    for h in range(heads):
        v = qkv[:, :, 2 * embed + h * dim : 2 * embed + (h + 1) * dim]
        torch.bmm(weights[h], v, out=heads_out[h])
    del weights
    # (H, n, k, L, D) -> (k, n, L, H, D): the heads side by side, sample-major rows
    joined = heads_out.view(heads, n, copies, length, dim).permute(2, 1, 3, 0, 4)
    joined = joined.reshape(copies * n * length, embed)
    out = tF.linear(joined, out_weight, out_bias).view(copies * n, length, embed)
    return out.transpose(0, 1)
