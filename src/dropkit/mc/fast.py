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
  zeros), and the dropout of the first item;
* ``multi_head_attention_forward`` (what ``nn.MultiheadAttention`` calls): a plain
  self-attention (no masks, ``need_weights=False``, nothing recorded for autograd) by
  :func:`dropkit.mc.attention.self_attention`, which makes no head-major copies and, on a
  replicated batch, projects and normalises one copy only; any other call by torch's own
  function with the two answers above in its globals.

A stacked ``nn.RNN/LSTM/GRU`` with ``dropout=`` runs its fused op once per layer, with the
inter-layer dropout of the first item in between (:func:`stacked_rnn`). While
:func:`predict` runs a replicated batch (``k`` copies of ``n`` rows, sample-major), the first
layer, which sees no dropout, runs once on the first copy when the RNN's input and initial
state are checked to be ``k`` equal copies, and its output is repeated: the deterministic
prefix inside the module is computed once per input, not once per sample.

A function mode does not see the calls that torch makes inside its own ops or inside a
Python function it is already answering (``nn.MultiheadAttention``'s attention dropout, the
inter-layer dropout of ``nn.RNN/LSTM/GRU``, ``at::dropout`` inside SDPA's math kernel). On the
CPU all of these draw their mask with one aten op, ``bernoulli_(keep)`` on a fresh tensor;
:class:`FastBernoulli`, a ``TorchDispatchMode``, fills that tensor from the Philox stream with
dropkit's kernel instead (same law: 1 with probability ``keep``, else 0, seed from torch's
generator or the op's ``generator``), and torch goes on to scale and multiply as it does.
:class:`FastDropout` enters it only around a fused RNN op on a ``PackedSequence`` (the one
case left once MHA, SDPA and padded RNNs are answered above), so no other op pays for it.

Only floating CPU tensors (not nested) take this path, only with a rate in (0, 1] and
``training=True``; every other call, every other op and every other device runs as torch
runs it. The masks come from the Philox stream with seeds drawn from torch's generator, so
``predict(seed=...)`` still reproduces its draws.
"""

from __future__ import annotations

import functools
import math
import types

import torch
import torch.nn.functional as tF
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from dropkit import functional as F
from dropkit.functional.mask import _mask_value
from dropkit.rng import backend as rng_backend
from dropkit.rng.kernels import cpu_kernels, numba_available
from dropkit.rng.ops import _NUMBA_KIND, cached_threshold, memory_order, numba_dropout

from . import replicas
from .attention import multi_head_attention

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


def _inverse(order: list[int]) -> list[int]:
    """The permutation that undoes ``x.permute(order)``."""
    return sorted(range(len(order)), key=order.__getitem__)


def dropout(input, p=0.5, training=True, inplace=False):
    """``torch.nn.functional.dropout``'s signature; dropkit's kernel where it applies.

    Without autograd the kernel runs over ``input`` in its memory order, written in place for
    ``inplace``: a transposed or channels_last tensor (``nn.MultiheadAttention``'s
    ``batch_first`` output) is neither copied nor re-strided. The elements are i.i.d., so the
    law is the same as in logical order; MC sampling needs no more (``consistent=True`` does
    not take this path)."""
    if not (training and isinstance(p, float | int) and 0.0 < p <= 1.0 and _cpu_float(input)):
        return tF.dropout(input, p, training, inplace)
    p = float(p)
    if (
        p < 1.0
        and input.dtype in _NUMBA_KIND
        and numba_available()
        and not (torch.is_grad_enabled() and input.requires_grad)
        and input.numel() > 0
    ):
        order = memory_order(input)
        if order is not None:
            dense = input.permute(order)
            seed, offset = rng_backend.draw_key(None, 0, input.numel())
            out = numba_dropout(
                dense, int(seed), offset, cached_threshold(p), 1.0 / (1.0 - p),
                out=dense if inplace else None,
            )  # fmt: skip
            if inplace:
                return input
            return out.permute(_inverse(order))
    return F.dropout(input, p, True, inplace)


def _drop_inplace(t: torch.Tensor, p: float) -> torch.Tensor:
    return dropout(t, p, True, True)


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
    if bias is None or not bool(torch.isneginf(bias).all(-1).any()):
        # no row of the mask is fully -inf, so torch's safe softmax equals softmax (finite
        # scores); the check runs on the mask, not on the H times larger scores
        weights = torch.softmax(scores, -1)
    else:
        weights = _SAFE_SOFTMAX(scores, -1)
    weights = dropout(weights, float(dropout_p), True, True)
    return torch.matmul(weights, value)


@functools.cache
def _multi_head_attention_forward():
    """torch's own ``F.multi_head_attention_forward`` bound to globals in which its
    ``dropout`` and ``scaled_dot_product_attention`` are this module's and its torch-function
    check is off: a function mode is popped while it answers a call, so it would not see the
    calls made inside (no code is copied; the function object shares torch's code)."""
    torch_fn = tF.multi_head_attention_forward
    scope = dict(vars(tF))
    scope.update(
        has_torch_function=lambda *_: False,
        dropout=dropout,
        scaled_dot_product_attention=scaled_dot_product_attention,
    )
    fn = types.FunctionType(
        torch_fn.__code__, scope, torch_fn.__name__, torch_fn.__defaults__, torch_fn.__closure__
    )
    fn.__kwdefaults__ = torch_fn.__kwdefaults__
    return fn


def _repeat(t: torch.Tensor, dim: int, k: int) -> torch.Tensor:
    """``k`` copies of ``t`` along ``dim``, laid out in memory as ``t`` is (a ``batch_first``
    RNN output is a time-major buffer seen transposed), so the dropout that follows walks
    the same memory order as on the op's own output."""
    order = memory_order(t)
    if order is None:
        return t.repeat(*[k if d == dim else 1 for d in range(t.dim())])
    dense = t.permute(order)
    at = order.index(dim)
    copies = dense.repeat(*[k if d == at else 1 for d in range(t.dim())])
    return copies.permute(_inverse(order))


_RNN_OPS = {
    name: getattr(torch._C._VariableFunctions, name)
    for name in ("lstm", "gru", "rnn_tanh", "rnn_relu")
}


def _rnn_op(func) -> bool:
    name = getattr(func, "__name__", None)
    return name in _RNN_OPS and func == _RNN_OPS[name]


def stacked_rnn(func, input, hx, params, has_biases, num_layers, rate, train, bidirectional,
                batch_first):  # fmt: skip
    r"""torch's fused RNN op (``_VF.lstm/gru/rnn_tanh/rnn_relu``, padded form) with
    ``num_layers > 1`` and dropout ``rate > 0`` in training, one layer at a time:
    :math:`x_{l+1} = \mathrm{dropout}(\mathrm{layer}_l(x_l))` for every layer but the last,
    as torch's op does (``params`` holds the same number of tensors per layer and direction;
    ``hx`` is ``(h, c)`` for the LSTM, ``h`` otherwise, ``(layers * directions, B, H)``).
    Returns what the op returns: ``(output, h_n, c_n)`` or ``(output, h_n)``."""
    lstm = isinstance(hx, tuple | list)
    dirs = 2 if bidirectional else 1
    per = len(params) // (num_layers * dirs)
    bdim = 0 if batch_first else 1
    declared = replicas.current()
    x, hs, cs = input, [], []
    for layer in range(num_layers):
        rows = slice(layer * dirs, (layer + 1) * dirs)
        states = [hx[0][rows], hx[1][rows]] if lstm else [hx[rows]]
        weights = params[layer * dirs * per : (layer + 1) * dirs * per]
        copies = 1
        if layer == 0 and declared is not None:
            k, n = declared
            if replicas.copies(x, bdim, k, n) and all(replicas.copies(h, 1, k, n) for h in states):
                copies = k
                x = x.narrow(bdim, 0, n)
                states = [h.narrow(1, 0, n) for h in states]
        state = tuple(states) if lstm else states[0]
        out, *last = func(x, state, weights, has_biases, 1, 0.0, train, bidirectional, batch_first)
        if copies > 1:  # the k copies of the first layer's output and final state
            out = _repeat(out, bdim, copies)
            last = [_repeat(h, 1, copies) for h in last]
        hs.append(last[0])
        if lstm:
            cs.append(last[1])
        x = dropout(out, float(rate), True) if layer < num_layers - 1 else out
    h_n = torch.cat(hs)
    return (x, h_n, torch.cat(cs)) if lstm else (x, h_n)


class FastDropout(TorchFunctionMode):
    """While active, ``F.dropout``, ``F.scaled_dot_product_attention`` and
    ``F.multi_head_attention_forward`` calls go to :func:`dropout`,
    :func:`scaled_dot_product_attention` and torch's MHA forward calling those two; torch's
    fused RNN ops to :func:`stacked_rnn` (padded input) or run under :class:`FastBernoulli`
    (a ``PackedSequence``); everything else runs unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is tF.dropout:
            func = dropout
        elif func is tF.scaled_dot_product_attention:
            func = scaled_dot_product_attention
        elif func is tF.multi_head_attention_forward:
            out = multi_head_attention(args, kwargs or {}, _drop_inplace, replicas.current())
            if out is not None:
                return out
            func = _multi_head_attention_forward()
        elif _rnn_op(func):
            if (
                not kwargs
                and len(args) == 9
                and isinstance(args[2], list | tuple)  # the padded form (not a PackedSequence)
                and args[4] > 1
                and args[5] > 0.0
                and args[6]
                and _cpu_float(args[0])
            ):
                return stacked_rnn(func, *args)
            # a PackedSequence: the op draws its inter-layer mask inside, with bernoulli_
            with FastBernoulli():
                return func(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


_FILL_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_ONE = {dtype: _mask_value(1.0, dtype) for dtype in _FILL_DTYPES}


def _fill_keep(out: torch.Tensor, keep: float, generator: torch.Generator | None) -> bool:
    """``out.bernoulli_(keep)`` from the Philox stream, in place; False where it cannot (then
    torch draws)."""
    if not (
        numba_available()
        and type(out) is torch.Tensor
        and out.device.type == "cpu"
        and out.dtype in _FILL_DTYPES
        and out.layout == torch.strided
        and out.is_contiguous()
        and out.numel() > 0
        and isinstance(keep, float | int)
        and 0.0 < keep < 1.0
    ):
        return False
    seed, offset = rng_backend.draw_key(generator, 0, out.numel())
    np_dtype, one = _ONE[out.dtype]
    flat = out.view(torch.int16 if np_dtype.itemsize == 2 else out.dtype).view(-1)
    array = flat.numpy().view(np_dtype)
    cpu_kernels().scaled_keep_kernel(array, int(seed), offset, 0, cached_threshold(1.0 - keep), one)
    return True


class FastBernoulli(TorchDispatchMode):
    """While active, ``aten.bernoulli_.float(t, keep)`` on a contiguous floating CPU tensor is
    filled by dropkit's Philox kernel (1 where kept, with probability ``keep``); every other
    op, and every other ``bernoulli_``, runs as torch runs it."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten.bernoulli_.float:
            keep = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
            generator = args[2] if len(args) > 2 else kwargs.get("generator")
            if _fill_keep(args[0], keep, generator):
                return args[0]
        return func(*args, **kwargs)
