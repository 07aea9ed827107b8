"""Recipes: named, reproducible experiments that the ``dropkit`` command runs for each rate.

A :class:`Recipe` bundles what the runner needs: a one-line summary, where the experiment comes
from, its data, a settings dataclass (every knob, with the defaults of the experiment it
reproduces; ``--set key=value`` overrides them), the default rates and epochs, which summary
values form the results table, which per-epoch values are plotted, and ``train(ctx)``, which
trains one trial and returns its final metrics.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .runs import TrialDir, trial_label

#: Largest seed a run accepts: ``seed * 1_000_003 + epoch`` (the data order) stays in int64.
MAX_SEED = 2**32 - 1


def derive_seed(*keys: int) -> int:
    """A seed in ``[0, 2**63)`` for the stream named by ``keys`` (e.g. ``(seed, split)``).

    Hashed by :class:`numpy.random.SeedSequence`, so distinct key tuples give unrelated seeds;
    ``seed + i`` would not (trial seed 1's chunk 0 would repeat seed 0's chunk 1).

    >>> derive_seed(0, 1) == derive_seed(1, 0)
    False
    """
    words = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) | (int(words[1]) >> 1)


__all__ = [
    "RECIPES",
    "Recipe",
    "TrialContext",
    "apply_overrides",
    "check_settings",
    "derive_seed",
    "get_recipe",
    "register",
]


@dataclass
class TrialContext:
    """Everything one trial needs: its folder, rate, variant, seed, epochs and settings."""

    trial: TrialDir
    p: float
    seed: int
    epochs: int
    settings: Any
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    variant: str | None = None
    progress: bool = True
    resume: bool = False
    data_path: str | None = None
    #: Called with each epoch's record after it is written (tests use it to interrupt a run).
    on_epoch: Callable[[dict[str, Any]], None] | None = None

    @property
    def label(self) -> str:
        return trial_label(self.p, self.variant)


@dataclass(frozen=True)
class Recipe:
    """A named experiment; see the module docstring."""

    name: str
    summary: str
    source: str
    data: str
    task: str
    settings: type
    train: Callable[[TrialContext], dict[str, float]]
    default_rates: tuple[float, ...] = (0.0, 0.5)
    default_epochs: int = 10
    columns: tuple[tuple[str, str], ...] = ()
    curves: tuple[dict[str, Any], ...] = ()
    sweep_metric: tuple[str, str] = ("test_acc", "test accuracy")
    #: Variants run for every non-zero rate (p = 0 runs once, as the no-dropout baseline).
    variants: tuple[str, ...] | None = None
    notes: str = ""

    def trials(
        self, rates: Sequence[float], seeds: Sequence[int], variants: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """The trial entries for ``rates`` × ``variants`` × ``seeds`` (p = 0: one variant)."""
        from .runs import trial_name

        variants = list(variants) if variants is not None else self.variants
        out = []
        for p in rates:
            kinds: list[str | None] = list(variants) if variants else [None]
            if p == 0 and variants:
                kinds = ["none"]
            for variant in kinds:
                label = trial_label(p, variant)
                for seed in seeds:
                    out.append({"name": trial_name(p, seed, variant), "p": float(p),
                                "seed": int(seed), "variant": variant, "label": label})  # fmt: skip
        return out


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to :data:`RECIPES` (names are unique)."""
    if recipe.name in RECIPES:
        raise ValueError(f"a recipe named {recipe.name!r} is already registered")
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; the ValueError lists the known ones."""
    from . import recipes  # noqa: F401  (registers the built-in recipes)

    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def _parse(text: str, kind: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if text.lower() == "none" and len(options) < len(typing.get_args(kind)):
            return None
        kind = options[0]
        origin = typing.get_origin(kind)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        return tuple(_parse(t, item, key) for t in text.split(",") if t)
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {key}: expected true or false, got {text!r}")
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise ValueError(
            f"--set {key}: expected a value of type {getattr(kind, '__name__', kind)}, got {text!r}"
        ) from None


def apply_overrides(settings: Any, overrides: Sequence[str]) -> Any:
    """A copy of the settings dataclass with ``key=value`` strings applied (typed by field)."""
    hints = typing.get_type_hints(type(settings))
    names = [f.name for f in dataclasses.fields(settings)]
    changes = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        if key not in names:
            raise ValueError(f"--set {key}: unknown setting; this recipe has: {', '.join(names)}")
        changes[key] = _parse(value, hints[key], key)
    return dataclasses.replace(settings, **changes)


def check_settings(
    settings: Any, *, positive: Sequence[str] = (), fractions: Sequence[str] = (),
    nonnegative: Sequence[str] = (), sizes: Sequence[str] = (),
) -> None:  # fmt: skip
    """ValueError naming the setting unless each listed one is > 0, in [0, 1), >= 0, or (for
    ``sizes``) a non-empty tuple of layer sizes >= 1."""
    for name in positive:
        value = getattr(settings, name)
        if value is not None and not value > 0:
            raise ValueError(f"setting {name} must be > 0, got {value!r}")
    for name in fractions:
        value = getattr(settings, name)
        if not 0 <= value < 1:
            raise ValueError(f"setting {name} must be in [0, 1), got {value!r}")
    for name in nonnegative:
        value = getattr(settings, name)
        if not value >= 0:
            raise ValueError(f"setting {name} must be >= 0, got {value!r}")
    for name in sizes:
        value = getattr(settings, name)
        if not value or min(value) < 1:
            raise ValueError(f"setting {name} must list sizes >= 1, got {value!r}")
