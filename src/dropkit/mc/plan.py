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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

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
    """

    calls: tuple[Call, ...]
    train: tuple[str, ...]
    stochastic: frozenset[str]

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
        return SamplingPlan(tuple(calls), tuple(sorted(train)), frozenset(stochastic))
    finally:
        for m, flag in flags:
            m.training = flag
