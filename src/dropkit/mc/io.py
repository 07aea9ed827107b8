"""Inputs and outputs of :func:`dropkit.mc.predict` as users have them.

Inputs: a tensor ``x`` (called ``model(x)``), a tuple/list of tensors (``model(*xs)``), or a
dict / Hugging Face ``BatchEncoding`` of tensors (``model(**inputs)``). The batch size ``N`` is
dim 0 of the first tensor; every tensor whose dim 0 is ``N`` is replicated (batched, prefix)
together, the rest are passed as they are.

Outputs: a tensor, a tuple/list (its first element), or a dict / ``ModelOutput``
(``logits``); ``output=`` names another key or index, or is a callable ``out -> tensor``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

#: ``target`` left out: tuple batches of one element and dict batches without a label key.
UNSET = object()
_LABEL_KEYS = ("labels", "label", "targets", "target", "y")


@dataclass(frozen=True)
class Batch:
    """One batch as the model is called: ``model(*args, **kwargs)`` with ``n`` rows."""

    args: tuple
    kwargs: dict
    n: int

    def tensors(self) -> list[torch.Tensor]:
        values = [*self.args, *self.kwargs.values()]
        return [v for v in values if isinstance(v, torch.Tensor)]

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor], n: int) -> Batch:
        def one(v):
            batched = isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == self.n
            return fn(v) if batched else v

        return Batch(
            tuple(one(a) for a in self.args), {k: one(v) for k, v in self.kwargs.items()}, n
        )

    def replicate(self, k: int) -> Batch:
        """``k`` copies of every batched tensor, sample-major along dim 0."""
        return self._map(lambda v: v.repeat(k, *([1] * (v.dim() - 1))), self.n * k)

    def clone(self) -> Batch:
        return self._map(torch.Tensor.clone, self.n)

    def to(self, device: torch.device | None) -> Batch:
        if device is None:
            return self
        move = lambda v: v.to(device) if isinstance(v, torch.Tensor) else v  # noqa: E731
        return Batch(
            tuple(map(move, self.args)), {k: move(v) for k, v in self.kwargs.items()}, self.n
        )

    def __call__(self, model: torch.nn.Module):
        return model(*self.args, **self.kwargs)

    def key(self) -> tuple:
        """Shapes without N, and dtypes: what the cost of one copy depends on."""
        return tuple(
            (tuple(t.shape[1:]) if t.dim() and t.shape[0] == self.n else tuple(t.shape), t.dtype)
            for t in self.tensors()
        )

    def structure(self) -> tuple:
        """What the code path of a call may depend on besides the values: the positional
        count, keyword names, shapes without N, dtypes and non-tensor arguments."""

        def one(v):
            if isinstance(v, torch.Tensor):
                shape = tuple(v.shape[1:]) if v.dim() and v.shape[0] == self.n else tuple(v.shape)
                return ("tensor", shape, v.dtype, v.device)
            return repr(v)

        return (
            tuple(one(a) for a in self.args),
            tuple((k, one(v)) for k, v in self.kwargs.items()),
        )

    @property
    def single(self) -> torch.Tensor | None:
        """The tensor when the model is called with one positional tensor, else None."""
        if len(self.args) == 1 and not self.kwargs and isinstance(self.args[0], torch.Tensor):
            return self.args[0]
        return None


def as_batch(x: object) -> Batch:
    """A tensor, tuple/list of tensors or dict of tensors as a :class:`Batch`."""
    if isinstance(x, torch.Tensor):
        args, kwargs = (x,), {}
    elif isinstance(x, tuple | list):
        args, kwargs = tuple(x), {}
    elif isinstance(x, Mapping):
        args, kwargs = (), dict(x)
    else:
        raise TypeError(
            "dropkit.mc.predict takes a tensor, a tuple of tensors, a dict/BatchEncoding of "
            f"tensors, or a DataLoader of these; got {type(x).__name__}"
        )
    batch = Batch(args, kwargs, 0)
    tensors = [t for t in batch.tensors() if t.dim() > 0]
    if not tensors:
        raise ValueError("dropkit.mc.predict: the inputs hold no tensor with a batch dim")
    return Batch(args, kwargs, int(tensors[0].shape[0]))


def split_batch(batch: object, target: object) -> tuple[Batch, torch.Tensor | None]:
    """A DataLoader batch as (inputs, targets). ``target``: an index of a tuple batch or a key
    of a dict batch holding the targets, None for none; left out (:data:`UNSET`) only a tensor,
    a one-element tuple or a dict without a label key is accepted, never a guess."""
    if target is UNSET:
        if isinstance(batch, tuple | list) and len(batch) > 1:
            raise ValueError(
                f"a DataLoader batch of {len(batch)} elements is ambiguous: pass target=-1 (or "
                "the index of the targets) if one element holds the targets, or target=None "
                "if every element is an input of the model"
            )
        if isinstance(batch, Mapping) and any(k in batch for k in _LABEL_KEYS):
            found = next(k for k in _LABEL_KEYS if k in batch)
            raise ValueError(
                f"a dict batch with key {found!r} is ambiguous: pass target={found!r} to use it "
                "as the targets, or target=None to pass it to the model"
            )
        target = None
    if target is None:
        return as_batch(batch), None
    if isinstance(batch, Mapping):
        if target not in batch:
            raise KeyError(f"target={target!r} is not a key of the batch ({list(batch)})")
        rest = {k: v for k, v in batch.items() if k != target}
        return as_batch(rest), batch[target]
    if isinstance(batch, tuple | list) and isinstance(target, int):
        items = list(batch)
        y = items.pop(target)
        return as_batch(tuple(items) if len(items) != 1 else items[0]), y
    raise TypeError(f"target={target!r} does not fit a batch of type {type(batch).__name__}")


def pick_output(out: object, output: str | int | Callable | None) -> tuple[torch.Tensor, bool]:
    """The tensor to summarise, and whether it is a Hugging Face style ``logits`` entry (its
    classes are in the last dim)."""
    if callable(output):
        out, hf = output(out), False
    elif output is not None:
        try:
            out, hf = out[output], False
        except (KeyError, IndexError, TypeError) as err:
            raise ValueError(f"output={output!r} cannot be read from the model output") from err
    elif isinstance(out, Mapping) or hasattr(out, "to_tuple"):
        if "logits" not in out:
            raise ValueError(
                f"the model returned {type(out).__name__} without 'logits' "
                f"(keys {list(out.keys())}); pass output= a key or a callable"
            )
        out, hf = out["logits"], True
    elif isinstance(out, tuple | list) and out:
        out, hf = out[0], False
    else:
        hf = False
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"dropkit.mc.predict needs a tensor output, got {type(out).__name__}; pass output="
        )
    return out, hf
