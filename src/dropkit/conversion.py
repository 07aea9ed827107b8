"""Replace a model's torch / timm / torchvision dropout modules with their dropkit equivalents.

One walk over the module tree; each known module is rebuilt as a :mod:`dropkit.nn` module with
the same rate, ``inplace``, mode and train/eval flag. Modules that look like dropout but cannot
be mapped safely (subclasses, hand-written variants) are reported, never touched.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from dropkit import nn as dkn
from dropkit.reference.base import check_p

# torch class -> dropkit class; matched by exact type, because a subclass may override forward.
_TORCH = {
    nn.Dropout: dkn.Dropout,
    nn.Dropout1d: dkn.Dropout1d,
    nn.Dropout2d: dkn.Dropout2d,
    nn.Dropout3d: dkn.Dropout3d,
    nn.AlphaDropout: dkn.AlphaDropout,
    nn.FeatureAlphaDropout: dkn.FeatureAlphaDropout,
}
# Class-name fragments of modules that probably drop something; unknown ones are reported.
_DROPOUT_LIKE = ("dropout", "droppath", "stochasticdepth", "dropblock", "dropconnect")


@dataclass(frozen=True)
class ConversionReport:
    """What :func:`convert` did.

    Attributes:
        replaced: module path -> (old type, new type), e.g.
            ``{"blocks.0.drop": ("torch.nn.Dropout", "dropkit.nn.Dropout")}``; the root
            module's path is ``""``. A module registered at several paths is listed once, at
            its first path in ``named_modules()`` order (all its paths get the same new module).
        skipped: module path -> (type, reason) for dropout-like modules left as they were.
    """

    replaced: dict[str, tuple[str, str]] = field(default_factory=dict)
    skipped: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def counts(self) -> Counter[str]:
        """Number of replaced modules by old type name (``Counter({"torch.nn.Dropout": 3})``)."""
        return Counter(old for old, _ in self.replaced.values())

    def __str__(self) -> str:
        rows = [(path or "<root>", old, new) for path, (old, new) in self.replaced.items()]
        for path, (old, why) in self.skipped.items():
            rows.append((path or "<root>", old, f"skipped: {why}"))
        if not rows:
            return "ConversionReport: nothing to convert"
        header = ("module", "old type", "new type")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(2)]
        lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in [header, *rows]]
        lines.append(f"{len(self.replaced)} replaced, {len(self.skipped)} skipped")
        return "\n".join(lines)


def _type_name(module: nn.Module) -> str:
    cls = type(module)
    # Layers live in private files (torch.nn.modules.dropout.X); name them as users import them.
    prefix = cls.__module__
    for public in ("torch.nn", "dropkit.nn"):
        if prefix.startswith(public + "."):
            prefix = public
    return f"{prefix}.{cls.__qualname__}"


def _builder(module: nn.Module) -> Callable[[float | None], nn.Module] | None:
    """A function ``p_override -> new dropkit module`` for a known module, else None."""
    cls = type(module)
    if cls in _TORCH:
        new = _TORCH[cls]
        return lambda p: new(module.p if p is None else p, inplace=module.inplace)
    if cls.__name__ == "DropPath" and cls.__module__.split(".")[0] == "timm":
        return lambda p: dkn.DropPath(
            module.drop_prob if p is None else p,
            mode="row",  # timm draws one Bernoulli per sample
            scale_by_keep=getattr(module, "scale_by_keep", True),
        )
    if cls.__name__ == "StochasticDepth" and cls.__module__.split(".")[0] == "torchvision":
        # torchvision always rescales kept samples by 1/(1-p) (and gives zeros at p = 1).
        return lambda p: dkn.DropPath(module.p if p is None else p, mode=module.mode)
    return None


def _skip_reason(module: nn.Module) -> str | None:
    """Why a module that looks like dropout is left alone, or None if it does not."""
    if isinstance(module, dkn.DropoutModule) or type(module).__module__.startswith("dropkit."):
        return None  # already dropkit: converting twice is a no-op
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return "subclass of a torch dropout class; its forward may differ, not mapped"
    name = type(module).__name__.lower()
    if any(fragment in name for fragment in _DROPOUT_LIKE):
        return "dropout-like class with no known dropkit equivalent"
    return None


def convert(
    model: nn.Module, *, p: float | None = None, inplace: bool = True
) -> tuple[nn.Module, ConversionReport]:
    """Replace known dropout modules in ``model`` (any depth) with :mod:`dropkit.nn` modules.

    Replaced (matched by exact type, or by class name and module path for the peers):

    * ``torch.nn.Dropout``, ``Dropout1d``, ``Dropout2d``, ``Dropout3d``, ``AlphaDropout``,
      ``FeatureAlphaDropout`` -> the :mod:`dropkit.nn` class of the same name (``p``, ``inplace``);
    * timm's ``DropPath(drop_prob, scale_by_keep)`` -> ``DropPath(p, "row", scale_by_keep)``;
    * torchvision's ``StochasticDepth(p, mode)`` -> ``DropPath(p, mode)`` (it always rescales
      by ``1/(1-p)``).

    Each new module keeps the old one's rate (or ``p`` when given: it overrides every rate),
    ``inplace``, mode and ``training`` flag. Subclasses of these classes and other classes
    whose name says dropout/drop-path/stochastic-depth/DropBlock/DropConnect are listed in
    ``report.skipped`` and left as they were; dropkit modules are left alone, so converting
    twice changes nothing. A module registered at several paths is replaced by one shared new
    module. Hooks registered on a replaced module are not carried over.

    Behaviour differences (dropkit checks ranks strictly instead of guessing):

    * ``torch.nn.Dropout2d`` on a 3-D input warns and applies 1-D channel dropout over
      ``(N, C, L)``; ``dropkit.nn.Dropout2d`` raises ``ValueError`` on anything but
      ``(N, C, H, W)``: use ``Dropout1d`` for sequences.
    * ``torch.nn.Dropout1d`` also accepts an unbatched ``(C, L)`` and ``torch.nn.Dropout3d`` an
      unbatched ``(C, D, H, W)``; the dropkit modules require the batch dim (``x[None]``).

    In eval mode every replacement is the identity, as the original; in training the masks
    have the same distribution but come from a different random stream.

    Args:
        model: the model; it is modified in place unless ``inplace=False``.
        p: optional drop rate in [0, 1] for every replaced module.
        inplace: when False, convert a ``copy.deepcopy`` of ``model`` and leave it untouched.

    Returns:
        ``(model, report)``: use the returned model (a root dropout module is itself replaced).

    Example:
        >>> from torch import nn
        >>> model, report = convert(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)))
        >>> model[1]
        Dropout(p=0.1, inplace=False)
        >>> dict(report.counts)
        {'torch.nn.Dropout': 1}
    """
    if p is not None:
        p = check_p(p, "convert")
    if not inplace:
        model = copy.deepcopy(model)
    # Plan every replacement first, so that a bad rate raises before anything is changed.
    new_of: dict[int, nn.Module] = {}
    replaced: dict[str, tuple[str, str]] = {}
    skipped: dict[str, tuple[str, str]] = {}
    for path, module in model.named_modules():
        build = _builder(module)
        if build is None:
            reason = _skip_reason(module)
            if reason is not None:
                skipped[path] = (_type_name(module), reason)
            continue
        try:
            new = build(p)
        except (TypeError, ValueError) as err:
            raise ValueError(f"convert: cannot convert module {path!r}: {err}") from err
        new.train(module.training)
        new_of[id(module)] = new
        replaced[path] = (_type_name(module), _type_name(new))
    # named_modules() lists a shared module once; walk every edge so each parent is updated.
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in new_of:
                parent.add_module(name, new_of[id(child)])
    model = new_of.get(id(model), model)
    return model, ConversionReport(replaced=replaced, skipped=skipped)
