"""Scheduled dropout: change the drop rate ``p`` of a model's dropout modules over training.

A *schedule* is a pure function ``t -> fraction`` in [0, 1] (t: optimiser steps from 0); a
:class:`DropoutScheduler` sets each module's rate to ``target * schedule(t)``, ramping it up to
the target. :func:`drop_path_rates` gives the depth-wise stochastic-depth rates.

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    >>> scheduler = DropoutScheduler(model, linear(total_steps=4))
    >>> scheduler.rates()  # before the first step: target * schedule(0) = 0.5 * 0
    {'1': 0.0}
    >>> for _ in range(2):
    ...     scheduler.step()  # call once per optimiser step, after it
    >>> scheduler.rates()
    {'1': 0.25}
"""

from __future__ import annotations

import bisect
import inspect
import itertools
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from dropkit.reference.base import DropRate, check_p

Schedule = Callable[[int], float]

__all__ = ["DropoutScheduler", "Schedule", "cosine", "curriculum", "drop_path_rates"]
__all__ += ["linear", "step"]


def _check_fraction(value: object, name: str, owner: str) -> float:
    """A fraction of the target rate: a real number in [0, 1] (NaN fails too)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0.0 <= value <= 1.0
    if not ok:
        raise ValueError(f"{owner}: {name} must be a real number in [0, 1], got {value!r}")
    return float(value)


def _check_int(value: object, name: str, owner: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _ramp(owner: str, total_steps: int, start: float, shape: Callable[[float], float]) -> Schedule:
    """``t -> start + (1 - start) * shape(min(t, T) / T)`` with ``shape`` rising from 0 to 1."""
    total_steps = _check_int(total_steps, "total_steps", owner)
    start = _check_fraction(start, "start", owner)

    def schedule(t: int) -> float:
        t = min(_check_int(t, "step t", owner, 0), total_steps)
        return start + (1.0 - start) * shape(t / total_steps)

    return schedule


def linear(total_steps: int, start: float = 0.0) -> Schedule:
    r"""Linear ramp :math:`f(t) = s + (1 - s)\,\min(t, T)/T` from ``start`` (s) at t = 0 to 1 at
    t = ``total_steps`` (T), then constant. ScheduledDropPath (Zoph et al. 2018,
    arXiv:1707.07012) and the DropBlock keep-probability ramp (Ghiasi et al. 2018,
    arXiv:1810.12890) are this schedule with ``start=0``."""
    return _ramp("linear", total_steps, start, lambda u: u)


def cosine(total_steps: int, start: float = 0.0) -> Schedule:
    r"""Half-cosine ramp :math:`f(t) = s + (1 - s)\,(1 - \cos(\pi \min(t, T)/T))/2`: flat at
    both ends, from ``start`` (s) at t = 0 to 1 at t = ``total_steps`` (T), then constant."""
    return _ramp("cosine", total_steps, start, lambda u: 0.5 * (1.0 - math.cos(math.pi * u)))


def step(milestones: Sequence[int], fractions: Sequence[float]) -> Schedule:
    r"""Piecewise constant: :math:`f(t) = ` ``fractions[i]`` for
    ``milestones[i-1] <= t < milestones[i]``, so ``fractions[0]`` before the first milestone and
    ``fractions[-1]`` from the last one on; ``len(fractions) == len(milestones) + 1``.

    Example: ``step([100, 200], [0.0, 0.5, 1.0])`` gives 0 for t < 100, 0.5 for 100 <= t < 200
    and 1 from t = 200 on.
    """
    milestones = [_check_int(m, f"milestones[{i}]", "step") for i, m in enumerate(milestones)]
    if any(b <= a for a, b in itertools.pairwise(milestones)):
        raise ValueError(f"step: milestones must be strictly increasing, got {milestones}")
    fractions = [_check_fraction(f, f"fractions[{i}]", "step") for i, f in enumerate(fractions)]
    if len(fractions) != len(milestones) + 1:
        raise ValueError(
            f"step: fractions must have len(milestones) + 1 = {len(milestones) + 1} entries "
            f"(one before the first milestone and one after each), got {len(fractions)}"
        )

    def schedule(t: int) -> float:
        return fractions[bisect.bisect_right(milestones, _check_int(t, "step t", "step", 0))]

    return schedule


def curriculum(gamma: float) -> Schedule:
    r"""Curriculum dropout (Morerio et al. 2017, arXiv:1703.06229): keep probability
    :math:`\theta(t) = (1 - \bar\theta) e^{-\gamma t} + \bar\theta`, so the drop rate is
    :math:`p(t) = 1 - \theta(t) = \bar p\,(1 - e^{-\gamma t})` and the fraction of the target
    :math:`\bar p` is :math:`f(t) = 1 - e^{-\gamma t}`: no dropout at t = 0, approaching
    :math:`\bar p` from below, never above it (99.3 % of it at t = 5/γ). ``t`` counts
    iterations, not epochs. The formula ``1 - (1 - p) e^{-γt} + p`` seen in some ports is a
    typo: it starts at 2p and tends to 1 + p > 1.
    """
    ok = isinstance(gamma, numbers.Real) and not isinstance(gamma, bool) and 0 < gamma < math.inf
    if not ok:
        raise ValueError(f"curriculum: gamma must be a finite real number > 0, got {gamma!r}")
    gamma = float(gamma)

    def schedule(t: int) -> float:
        # expm1 gives 1 - e^(-γt) to full precision even when γt is tiny
        return -math.expm1(-gamma * _check_int(t, "step t", "curriculum", 0))

    return schedule


def _rate_attr(module: nn.Module) -> str | None:
    """The attribute holding ``module``'s drop rate, or None if it is not a dropout module."""
    cls = type(module)
    if isinstance(inspect.getattr_static(cls, "p", None), DropRate):
        return "p"  # dropkit modules: the descriptor validates every assignment
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return "p"  # torch Dropout, Dropout1d/2d/3d, AlphaDropout, FeatureAlphaDropout
    if cls.__name__ == "DropPath" and cls.__module__.split(".")[0] == "timm":
        return "drop_prob"
    if cls.__name__ == "StochasticDepth" and cls.__module__.split(".")[0] == "torchvision":
        return "p"
    return None


class DropoutScheduler:
    r"""Set ``p = target * schedule(t)`` on every selected dropout module.

    Args:
        model_or_modules: a model, searched for dropout modules (dropkit modules, torch's
            ``Dropout``/``Dropout1d/2d/3d``/``AlphaDropout``/``FeatureAlphaDropout``, timm's
            ``DropPath`` (``drop_prob``), torchvision's ``StochasticDepth``), named as in
            ``named_modules()``; or an iterable of such modules, named ``"0"``, ``"1"``, ...
        schedule: ``t -> fraction`` in [0, 1], e.g. :func:`linear` or :func:`curriculum`.
        select: optional ``select(name, module) -> bool``; only modules it accepts are driven.

    Each module's *target* is its rate when the scheduler is built. The constructor already
    sets ``p = target * schedule(0)``; :meth:`step` advances ``t`` by one and sets
    ``p = target * schedule(t)``. Call it after each optimiser step (as an LR scheduler).
    Rates are set through the module attribute, so dropkit modules validate every value.
    """

    def __init__(
        self,
        model_or_modules: nn.Module | Iterable[nn.Module],
        schedule: Schedule,
        *,
        select: Callable[[str, nn.Module], bool] | None = None,
    ) -> None:
        if not callable(schedule):
            raise TypeError(f"DropoutScheduler: schedule must be callable, got {schedule!r}")
        explicit = not isinstance(model_or_modules, nn.Module)
        named = enumerate(model_or_modules) if explicit else model_or_modules.named_modules()
        self._modules: dict[str, tuple[nn.Module, str]] = {}
        for key, module in named:
            name = str(key)
            attr = _rate_attr(module) if isinstance(module, nn.Module) else None
            if attr is None and explicit:
                raise TypeError(
                    f"DropoutScheduler: model_or_modules[{name}] must be a dropout module "
                    f"(with a drop rate p or drop_prob), got {type(module).__name__}"
                )
            if attr is not None and (select is None or select(name, module)):
                self._modules[name] = (module, attr)
        if not self._modules:
            where = "model_or_modules" + (" that select accepts" if select else "")
            raise ValueError(f"DropoutScheduler: no dropout module found in {where}")
        self.schedule = schedule
        owner, items = "DropoutScheduler", self._modules.items()
        self.targets = {n: check_p(getattr(m, a), f"{owner} ({n!r})") for n, (m, a) in items}
        self.t = 0
        self._apply()

    def _apply(self) -> None:
        fraction = _check_fraction(self.schedule(self.t), f"schedule({self.t})", "DropoutScheduler")
        for name, (module, attr) in self._modules.items():
            setattr(module, attr, self.targets[name] * fraction)

    def step(self) -> None:
        """Advance one step: ``t += 1``, then ``p = target * schedule(t)`` on every module."""
        self.t += 1
        self._apply()

    def rates(self) -> dict[str, float]:
        """The current drop rate of every driven module, by name."""
        return {name: float(getattr(m, attr)) for name, (m, attr) in self._modules.items()}

    def state_dict(self) -> dict[str, Any]:
        """``{"t": steps taken, "targets": {name: target rate}}``; the schedule is not saved."""
        return {"t": self.t, "targets": dict(self.targets)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: restore ``t`` and the targets (same module names), then set the rates."""
        owner = "DropoutScheduler.load_state_dict"
        if set(state["targets"]) != set(self._modules):
            names, got = sorted(self._modules), sorted(state["targets"])
            raise ValueError(f"{owner}: state targets must name the modules {names}, got {got}")
        self.t = _check_int(state["t"], "step t", owner, 0)
        self.targets = {n: check_p(p, f"{owner} ({n!r})") for n, p in state["targets"].items()}
        self._apply()


def drop_path_rates(
    depth: int, max_rate: float, *, stagewise: Sequence[int] | None = None
) -> list[float]:
    r"""Depth-linear stochastic-depth rates, one per residual block (Huang et al. 2016,
    arXiv:1603.09382, :math:`p_l = \tfrac{l}{L} p_L`).

    Per block (default): ``torch.linspace(0, max_rate, depth)`` as Python floats, i.e.
    :math:`p_l = \tfrac{l - 1}{L - 1}\,\text{max\_rate}` for blocks l = 1..L (the first block
    is never dropped, the last gets ``max_rate``; ``[0.0]`` for depth 1). This is timm's
    ``calculate_drop_path_rates(max_rate, depth)``, values included (computed with torch in the
    default dtype, float32). Huang et al.'s :math:`l/L` starts at :math:`p_L/L` instead.

    Stage-wise (``stagewise=[d_1, ..., d_S]``, with ``sum(stagewise) == depth``): one rate per
    stage, ``r_s = torch.linspace(0, max_rate, S)[s]``, repeated ``d_s`` times, so the blocks of
    a stage share a rate. (timm's ``stagewise=True`` instead splits the per-block list into
    stages, despite its docstring.)

    Example:
        >>> drop_path_rates(5, 0.2)
        [0.0, 0.05000000074505806, 0.10000000149011612, 0.15000000596046448, 0.20000000298023224]
        >>> drop_path_rates(5, 0.2, stagewise=[2, 3])
        [0.0, 0.0, 0.20000000298023224, 0.20000000298023224, 0.20000000298023224]
    """
    depth = _check_int(depth, "depth", "drop_path_rates")
    max_rate = _check_fraction(max_rate, "max_rate", "drop_path_rates")
    if stagewise is None:
        return torch.linspace(0.0, max_rate, depth).tolist()
    stages = [_check_int(d, f"stagewise[{i}]", "drop_path_rates") for i, d in enumerate(stagewise)]
    if not stages or sum(stages) != depth:
        raise ValueError(
            f"drop_path_rates: stagewise must be a non-empty list of stage depths summing to "
            f"depth={depth}, got {list(stagewise)} (sum {sum(stages)})"
        )
    per_stage = torch.linspace(0.0, max_rate, len(stages)).tolist()
    return [rate for rate, d in zip(per_stage, stages, strict=True) for _ in range(d)]
