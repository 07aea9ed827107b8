"""Which modules MC mode puts in train mode, derived from probing forwards (:mod:`.probe`).

1. *All-train probe*: every module without running statistics in train mode (BatchNorm and
   the like stay in eval): the stochastic calls the model can make at test time.
2. *MC probe*: the model in eval except the modules that issued those calls (a dropout
   module, an attention module that gates ``dropout_p`` on its own ``self.training`` as
   Hugging Face's do, ``nn.MultiheadAttention``, an RNN with ``dropout=``). Every call of
   probe 1 must be made again; a call that is missing is gated on a parent's flag, so the
   nearest parent without running statistics joins the train set and the probe is repeated.
   A call that cannot be brought back raises, naming the module and the op.

Only the issuing modules' own flags change (not their children's), so a BatchNorm inside an
attention block stays in eval.

A plan is kept per model (:func:`cached_plan`) and reused while nothing it was derived from
has changed: the modules (identity, type, ``training`` flags, instance-level ``forward``,
hooks), their plain attributes (rates such as ``p``, ``dropout_prob``, ``attention_dropout``),
the plain attributes of the objects they hold (a Hugging Face ``config``, whose
``_attn_implementation`` picks the attention code), the grad mode and the structure of the
input (positional count, keyword names, shapes but the batch dim, dtypes, non-tensor values).
Any change probes again, so repeated ``predict`` calls on the same model and input shapes
skip the two probing forwards.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
from torch import nn

from . import layout
from .modes import drop_rate, has_running_stats, is_dropout_module
from .probe import Call, record


@dataclass(frozen=True)
class SamplingPlan:
    """What MC mode samples.

    Attributes:
        calls: the stochastic calls of one MC-mode forward, in order.
        train: paths of the modules put in train mode (issuers, and parents that gate them).
        stochastic: paths of the modules whose forward runs a stochastic call (the issuers and
            every ancestor); the prefix strategy never caches them.
        layouts: per sequence module (:mod:`.layout`), the batch sizes its calls got in the MC
            probe forward (one copy of the batch), checked on replicated forwards.
    """

    calls: tuple[Call, ...]
    train: tuple[str, ...]
    stochastic: frozenset[str]
    layouts: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def sampled(self) -> tuple[tuple[str, str], ...]:
        """``(module, op)`` pairs sampled, without repeats, in call order."""
        return tuple(dict.fromkeys((c.module, c.op) for c in self.calls))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".") if name else []
    return [".".join(parts[:i]) for i in range(len(parts) - 1, -1, -1)]


def _nothing_message(model: nn.Module) -> str:
    dropout = [(n, drop_rate(m)) for n, m in model.named_modules() if is_dropout_module(m)]
    listed = ", ".join(f"{n or '<root>'} (p={r})" for n, r in dropout) or "none"
    return (
        f"dropkit.mc: no stochastic op runs in {type(model).__name__}'s forward in MC mode, so "
        f"every MC sample would be the same (dropout modules: {listed}; a module that is never "
        "called, or whose rate is only read by its parent, counts for nothing). Set a dropout "
        "rate > 0 (e.g. attention_probs_dropout_prob / attn_pdrop in a Hugging Face config, "
        "module.p = 0.1) or convert the model with dropkit.convert(model, p=0.1)"
    )


def _set_flags(model: nn.Module, train: set[str]) -> None:
    model.eval()
    for name in train:
        model.get_submodule(name).training = True


def plan_sampling(model: nn.Module, forward: Callable[[], object]) -> SamplingPlan:
    """Probe ``model`` with ``forward()`` (a call of the model on a real batch) and plan MC mode.

    Every module's ``training`` flag is as before when this returns or raises.
    """
    flags = [(m, m.training) for m in model.modules()]
    try:
        for m, _ in flags:
            m.training = not has_running_stats(m)
        wanted = record(model, forward)
        if not wanted:
            raise ValueError(_nothing_message(model))
        want = Counter((c.module, c.op) for c in wanted)
        train = {c.module for c in wanted}
        for _ in range(len(flags) + 1):
            _set_flags(model, train)
            with layout.record(model) as sizes:
                calls = record(model, forward)
            missing = want - Counter((c.module, c.op) for c in calls)
            if not missing:
                break
            grown = False
            for module, _op in missing:
                parent = next(
                    (a for a in _ancestors(module)
                     if a not in train and not has_running_stats(model.get_submodule(a))),
                    None,
                )  # fmt: skip
                if parent is not None:
                    train.add(parent)
                    grown = True
            if not grown:
                module, op = next(iter(missing))
                raise ValueError(
                    f"dropkit.mc: module {module or '<root>'!r} "
                    f"({type(model.get_submodule(module)).__name__}) runs {op} in train mode "
                    "but not in MC mode, and no parent without running statistics gates it; "
                    "it cannot be sampled without putting BatchNorm-like layers in train mode"
                )
        stochastic = {a for c in calls for a in [c.module, *_ancestors(c.module)]}
        layouts = tuple((name, tuple(seen)) for name, seen in sizes.items())
        return SamplingPlan(tuple(calls), tuple(sorted(train)), frozenset(stochastic), layouts)
    finally:
        for m, flag in flags:
            m.training = flag


_SCALARS = (bool, int, float, str, type(None), torch.dtype, torch.device)
_PLANS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, SamplingPlan]] = (
    weakref.WeakKeyDictionary()
)


def _plain(obj: object) -> tuple:
    """``obj``'s instance attributes that are plain values (numbers, strings, flags)."""
    return tuple((k, v) for k, v in vars(obj).items() if isinstance(v, _SCALARS))


def _module_state(module: nn.Module) -> tuple:
    held = []
    for key, value in vars(module).items():
        if isinstance(value, _SCALARS):
            held.append((key, value))
        elif key in ("_forward_hooks", "_forward_pre_hooks"):
            held.append((key, tuple(value)))
        elif key == "forward" or (callable(value) and not isinstance(value, nn.Module | type)):
            held.append((key, id(value)))
        elif hasattr(value, "__dict__") and not isinstance(value, nn.Module | torch.Tensor):
            held.append((key, id(value), _plain(value)))
    return (id(module), type(module), module.training, tuple(held))


def model_state(model: nn.Module) -> tuple:
    """What a :class:`SamplingPlan` of ``model`` depends on, as a comparable value."""
    return tuple((name, _module_state(m)) for name, m in model.named_modules())


def cached_plan(
    model: nn.Module, forward: Callable[[], object], inputs: Hashable, rows: int | None = None
) -> SamplingPlan:
    """:func:`plan_sampling`, reused while ``model_state(model)``, the grad mode, ``inputs``
    (the input's structure) and ``rows`` are those of the call that made it. Pass the batch
    size as ``rows`` when the plan's ``layouts`` (batch sizes of one copy) will be checked."""
    key = (inputs, rows, torch.is_grad_enabled(), model_state(model))
    held = _PLANS.get(model)
    if held is not None and held[0] == key:
        return held[1]
    plan = plan_sampling(model, forward)
    _PLANS[model] = (key, plan)
    return plan
