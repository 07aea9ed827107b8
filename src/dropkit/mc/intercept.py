"""Consistent masks for dropout that torch applies inside its own ops (``consistent=True``).

Torch's dropout modules, ``F.dropout*`` / ``alpha_dropout`` / ``feature_alpha_dropout``, SDPA's
``dropout_p`` (forced to the math kernel), ``nn.MultiheadAttention``'s internal dropout and the
inter-layer dropout of ``nn.RNN/LSTM/GRU`` (cuDNN off) all draw their mask with one aten op:
``bernoulli_(keep)`` on the CPU, ``native_dropout(x, p, train)`` on CUDA. While
:func:`dropkit.mc.predict` samples with ``consistent=True``, a ``TorchDispatchMode`` answers
those ops with dropkit's counter-based Philox masks: for MC sample ``t`` the mask of the
``c``-th call of the module at position ``j`` of ``named_modules()`` comes from key
:func:`dropkit.mc.sample_seed` ``(seed, 2^20 + j, t)`` at stream positions from
``c * 2^40``, shared along the batch dim: dim 1 inside RNNs (time-major) and in the dropout
modules of a sequence-first ``nn.TransformerEncoderLayer`` / ``DecoderLayer``, the batch
part of ``nn.MultiheadAttention``'s ``(N * heads, L, S)`` weights, else dim 0. So every input,
batch, call and strategy sees the same T masks, as for dropkit modules.

Stochastic depth written as Hugging Face writes it (``floor(keep + torch.rand((N, 1, ..., 1)))``
in BEiT, Swin, ConvNeXt, ...) draws one uniform per sample with ``aten.rand``: that draw is
answered with one uniform per MC sample ``t``, shared by every input, from the same key and
position: ``u = (w >> (32 - m)) 2^-m`` for the Philox word ``w`` and ``m`` the precision of the
requested dtype (24 bits for float32, at most 32), so ``u < 1`` exactly in that dtype. A
``rand`` of any other shape (noise, LayerDrop's one draw per forward) raises, naming the module.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from dropkit import functional as F
from dropkit.rng import random_words

from .modes import is_dropkit_dropout
from .probe import ModuleStack
from .sampling import CALL_STRIDE, MAX_SAMPLES, Sampler, sample_seed

#: Module indices of torch-internal streams start here (dropkit modules use 0, 1, ...).
INTERNAL_BASE = MAX_SAMPLES


def _train(args: tuple, kwargs: dict) -> bool:
    """``native_dropout``'s ``train`` argument (optional; None means train)."""
    train = args[2] if len(args) > 2 else kwargs.get("train")
    return train is None or bool(train)


class _Consistent(TorchDispatchMode):
    def __init__(self, model: nn.Module, sampler: Sampler, rows: int) -> None:
        super().__init__()
        self.stack = ModuleStack(model)
        self.index = {name: j for j, name in enumerate(self.stack.names.values())}
        self.sampler = sampler
        self.rows = rows
        self._calls: dict[str, int] = {}
        self._ts: list[int] | None = None
        self._seeds: dict[tuple[int, int], int] = {}

    def _seed(self, j: int, t: int) -> int:
        if (j, t) not in self._seeds:
            self._seeds[j, t] = sample_seed(self.sampler.seed, INTERNAL_BASE + j, t)
        return self._seeds[j, t]

    def _layout(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
        """How the innermost module lays out the batch in a random op of ``shape``: the shape
        to view the tensor as, and the dim of that view holding the replicated batch.

        Only layouts torch's own modules fix are used (never a guess from sizes): RNNs run
        time-major (dim 1); ``nn.MultiheadAttention`` drops its weights as
        ``(N * heads, L, S)``, batch-major; the dropout modules of a sequence-first
        ``nn.TransformerEncoderLayer`` / ``DecoderLayer`` see ``(L, N, E)``."""
        stack = self.stack.stack
        module = stack[-1][1]
        expected = len(self.sampler.ts) * self.rows
        if isinstance(module, nn.RNNBase) and len(shape) > 1:
            return shape, 1
        if isinstance(module, nn.MultiheadAttention) and len(shape) == 3:
            heads = module.num_heads
            if shape[0] == expected * heads:
                return (expected, heads, *shape[1:]), 0
        parent = stack[-2][1] if len(stack) > 1 else None
        if (
            isinstance(module, nn.modules.dropout._DropoutNd)
            and isinstance(parent, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer)
            and not parent.self_attn.batch_first  # the layer keeps its layout only there
            and len(shape) == 3
        ):
            return shape, 1
        return shape, 0

    def _slot(self, shape: tuple[int, ...], op: str) -> tuple[int, int, tuple[int, ...], int]:
        """``(module index, call, view, batch dim)`` of a random op of ``shape`` issued by the
        innermost module (:meth:`_layout`), checking that the replicated batch is there."""
        name, module = self.stack.stack[-1]
        if self._ts is not self.sampler.ts:  # a new model call: call counters restart
            self._ts, self._calls = self.sampler.ts, {}
        call = self._calls.get(name, 0)
        self._calls[name] = call + 1
        ts = self.sampler.ts
        self.rows = getattr(self.sampler, "rows", self.rows)
        view, dim = self._layout(shape)
        if len(view) == 0 or view[dim] != len(ts) * self.rows:
            raise ValueError(
                f"consistent=True: {op} in module {name or '<root>'!r} "
                f"({type(module).__name__}) got shape {tuple(shape)}, without the "
                f"{len(ts)} x {self.rows} rows of the batch in dim {dim}; use consistent=False"
            )
        return self.index[name], call, view, dim

    def _uniform(self, shape: tuple[int, ...], dtype: torch.dtype, device, op: str):
        """One uniform in [0, 1) per MC sample for a per-sample ``rand((T N, 1, ..., 1))``."""
        j, call, _, dim = self._slot(shape, op)
        if dim != 0 or any(size != 1 for size in shape[1:]):
            name, module = self.stack.stack[-1]
            raise ValueError(
                f"consistent=True: {op} in module {name or '<root>'!r} "
                f"({type(module).__name__}) draws shape {tuple(shape)}; only one uniform per "
                "sample, shape (N, 1, ..., 1) (stochastic depth), can be shared across "
                "inputs; use consistent=False"
            )
        bits = min(32, 1 - int(math.log2(torch.finfo(dtype).eps)))  # significand bits
        words = [int(random_words(self._seed(j, t), call * CALL_STRIDE, 1)[0]) for t in self._ts]
        values = torch.tensor([w >> (32 - bits) for w in words], dtype=torch.float64) / 2**bits
        values = values.to(dtype).repeat_interleave(self.rows).reshape(shape)
        return values if device is None else values.to(device)

    def _keep(self, like: torch.Tensor, p: float, op: str) -> torch.Tensor:
        j, call, view, dim = self._slot(tuple(like.shape), op)
        ts = self.sampler.ts
        shape = list(view)
        shape[dim] = 1
        masks = [
            F.bernoulli_mask(
                shape, p, device=like.device, seed=self._seed(j, t),
                offset=call * CALL_STRIDE,
            ).expand(*view[:dim], self.rows, *view[dim + 1 :])
            for t in ts
        ]  # fmt: skip
        return torch.cat(masks, dim).reshape(like.shape)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        stack = self.stack.stack
        if stack and not any(is_dropkit_dropout(m) for _, m in stack):
            if func is torch.ops.aten.bernoulli_.float:
                keep_p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
                keep = self._keep(args[0], 1.0 - float(keep_p), str(func))
                return args[0].copy_(keep)
            if func is torch.ops.aten.native_dropout.default and _train(args, kwargs):
                x, p = args[0], float(args[1])
                keep = self._keep(x, p, str(func))
                scale = 1.0 / (1.0 - p) if p < 1.0 else 0.0
                return torch.where(keep, x * scale, torch.zeros_like(x)), keep
            if func is torch.ops.aten.rand.default:
                size = tuple(args[0] if args else kwargs["size"])
                dtype = kwargs.get("dtype") or torch.get_default_dtype()
                return self._uniform(size, dtype, kwargs.get("device"), str(func))
        return func(*args, **kwargs)


@contextlib.contextmanager
def consistent_ops(model: nn.Module, sampler: Sampler, rows: int) -> Iterator[None]:
    """Answer torch's internal dropout with consistent masks while the block runs; ``rows`` is
    the batch size N (a replicated call holds ``len(sampler.ts)`` copies)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mode = _Consistent(model, sampler, rows)
    try:
        with sdpa_kernel(SDPBackend.MATH), torch.backends.cudnn.flags(enabled=False), mode:
            yield
    finally:
        mode.stack.remove()
