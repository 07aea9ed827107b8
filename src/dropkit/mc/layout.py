"""Where torch's sequence modules find the batch, checked on a replicated batch.

The ``batched`` and ``prefix`` strategies of :func:`dropkit.mc.predict` copy the batch ``k``
times along dim 0 of the model input. That is only right when dim 0 *is* the batch: a
sequence-first model (``(L, N)`` token ids into ``nn.LSTM(batch_first=False)``, the default,
or into a sequence-first ``nn.TransformerEncoderLayer``) would receive the copies one after
the other along *time*, and each copy but the first would start from the hidden state the
previous one left (an RNN) or attend to the other copies (attention): samples that look fine
and are wrong.

Torch's sequence modules (and dropkit's ``LockedDropout``, whose mask is shared along time)
fix where their batch is (``batch_first``), so the single-copy probe
forward records the size of each one's batch dim (:func:`record`), and every forward on ``k``
copies checks that it is ``k`` times that (:func:`check`). A module whose batch does not grow
with the copies raises :class:`BatchLayoutError`, naming it; ``strategy="auto"`` then samples
with ``"loop"``.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator

import torch
from torch import nn

from dropkit.nn.locked import LockedDropout

#: Modules whose input layout is fixed by ``batch_first`` (their own, or their attention's);
#: dropkit's LockedDropout shares its mask along time, so copies stacked along time would
#: share one mask.
LAYOUT_TYPES = (
    nn.RNNBase,
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    LockedDropout,
)


class BatchLayoutError(ValueError):
    """The batch of the model input is not the batch that a sequence module receives."""


def has_layout_modules(model: nn.Module) -> bool:
    """Whether ``model`` holds a module of :data:`LAYOUT_TYPES`."""
    return any(isinstance(m, LAYOUT_TYPES) for m in model.modules())


def _batch_dim(module: nn.Module) -> int:
    if isinstance(module, nn.RNNBase | nn.MultiheadAttention | LockedDropout):
        first = module.batch_first
    else:  # transformer layers keep the flag on their attention only
        first = module.self_attn.batch_first
    return 0 if first else 1


def batch_size(module: nn.Module, args: tuple, kwargs: dict) -> int | None:
    """The size of the batch dim of ``module``'s main input, or None where the input has no
    batch dim to tell (a packed sequence, an unbatched 2-D input)."""
    x = (
        args[0]
        if args
        else next((kwargs[k] for k in ("input", "query", "src", "tgt") if k in kwargs), None)
    )
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        return None
    return x.shape[_batch_dim(module)]


def _hook_all(model: nn.Module, hook) -> list:
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, LAYOUT_TYPES):
            handles.append(
                module.register_forward_pre_hook(
                    lambda m, args, kwargs, name=name: hook(name, m, args, kwargs),
                    with_kwargs=True,
                )
            )
    return handles


@contextlib.contextmanager
def record(model: nn.Module) -> Iterator[dict[str, list[int]]]:
    """Record, per module path, the batch sizes of the calls of the forwards run in the block
    (in call order); calls whose batch cannot be told are left out."""
    sizes: dict[str, list[int]] = defaultdict(list)

    def hook(name, module, args, kwargs):
        size = batch_size(module, args, kwargs)
        if size is not None:
            sizes[name].append(size)

    handles = _hook_all(model, hook)
    try:
        yield sizes
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def check(model: nn.Module, recorded: dict[str, tuple[int, ...]], k: int) -> Iterator[None]:
    """Raise :class:`BatchLayoutError` when a sequence module called in the block (one forward
    on ``k`` sample-major copies) gets a batch other than ``k`` times the one it got from a
    single copy (``recorded``, from :func:`record`)."""
    calls: dict[str, int] = defaultdict(int)

    def hook(name, module, args, kwargs):
        size = batch_size(module, args, kwargs)
        if size is None:
            return
        i = calls[name]
        calls[name] += 1
        single = recorded.get(name, ())
        if i < len(single) and size != k * single[i]:
            dim = _batch_dim(module)
            raise BatchLayoutError(
                f"module {name or '<root>'!r} ({type(module).__name__}) reads its batch from dim "
                f"{dim} of its input, which holds {size} rows with {k} copies of the model "
                f"input stacked along dim 0 and {single[i]} with one: dim 0 of the model input "
                "is not its batch (a sequence-first input?), so the copies would run one after "
                "another instead of side by side. Use strategy='loop' (or 'auto'), or give the "
                "model batch-first inputs"
            )

    handles = _hook_all(model, hook)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
