"""Replace a model's torch / timm / torchvision / Hugging Face dropout modules with their dropkit
equivalents, and report what the model really runs.

One walk over the module tree; each known module is rebuilt as a :mod:`dropkit.nn` module with
the same rate, ``inplace``, mode and train/eval flag. Modules that look like dropout but cannot
be mapped safely (subclasses, hand-written variants) are reported, never touched.

A dropout module in the tree is not always one the forward calls: Hugging Face attention reads
``self.dropout.p`` and applies the rate itself (``F.dropout`` on the attention weights, or SDPA's
``dropout_p``), and torch applies the dropout of ``nn.MultiheadAttention`` and of
``nn.RNN/LSTM/GRU(dropout=)`` inside its own ops. Given ``example_inputs``, :func:`convert` runs
one probing forward (:mod:`dropkit.mc.probe`: a ``TorchDispatchMode`` that records which module
issued which random op) and the report says which replaced modules run, which only lend their
rate to a parent, and which dropout convert cannot replace.
"""

from __future__ import annotations

import copy
import math
import numbers
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
_MC = "dropkit.mc.predict samples it at the dispatcher"
NOT_PROBED = "not probed: pass example_inputs= to see which modules the forward runs"


@dataclass(frozen=True)
class ConversionReport:
    """What :func:`convert` did, and what the model's forward runs.

    Attributes:
        replaced: module path -> (old type, new type), e.g.
            ``{"blocks.0.drop": ("torch.nn.Dropout", "dropkit.nn.Dropout")}``; the root
            module's path is ``""``. A module registered at several paths is listed once, at
            its first path in ``named_modules()`` order (all its paths get the same new module).
        skipped: module path -> (type, reason) for dropout-like modules left as they were.
        rate_set: path -> (type, old p, new p) for modules that already were dropkit modules
            and got the rate passed as ``p`` (without ``p`` they are left alone).
        internal: path -> (type, what) for dropout that torch or the model applies inside a
            module's own forward from a float rate (``nn.MultiheadAttention(dropout=)``,
            ``nn.RNN/LSTM/GRU(dropout=)`` with several layers, a Hugging Face attention's
            ``attention_dropout`` float from its config): convert cannot replace it; the text
            says how :func:`dropkit.mc.predict` handles it.
        called: paths of the dropout modules (replaced or already dropkit) that ran in the
            probing forward; None when not probed (no ``example_inputs``).
        read_by_parent: path -> (parent path, op, how MC mode handles it) for replaced modules
            that never run but whose rate a parent applies itself (the parent issued an op at
            that rate in the probe); None when not probed.
    """

    replaced: dict[str, tuple[str, str]] = field(default_factory=dict)
    skipped: dict[str, tuple[str, str]] = field(default_factory=dict)
    rate_set: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    internal: dict[str, tuple[str, str]] = field(default_factory=dict)
    called: frozenset[str] | None = None
    read_by_parent: dict[str, tuple[str, str, str]] | None = None

    @property
    def probed(self) -> bool:
        """Whether a probing forward ran (``example_inputs`` was given)."""
        return self.called is not None

    @property
    def not_called(self) -> tuple[str, ...] | None:
        """Replaced modules that neither ran nor lent their rate to a parent (dead modules, or
        a rate of 0 read by a parent); None when not probed."""
        if self.called is None or self.read_by_parent is None:
            return None
        return tuple(p for p in self.replaced if p not in self.called | set(self.read_by_parent))

    @property
    def counts(self) -> Counter[str]:
        """Number of replaced modules by old type name (``Counter({"torch.nn.Dropout": 3})``)."""
        return Counter(old for old, _ in self.replaced.values())

    def status(self, path: str) -> str:
        """What the forward does with the replaced module at ``path``: ``"called"``,
        ``"rate read by <parent>"``, ``"not called"`` or ``"not probed"``."""
        if self.called is None or self.read_by_parent is None:
            return "not probed"
        if path in self.called:
            return "called"
        if path in self.read_by_parent:
            return f"rate read by {self.read_by_parent[path][0] or '<root>'}"
        return "not called"

    def __str__(self) -> str:
        status = self.status if self.probed else lambda path: ""
        rows = [(p or "<root>", old, new, status(p)) for p, (old, new) in self.replaced.items()]
        for path, (old, before, after) in self.rate_set.items():
            rows.append((path or "<root>", old, f"p {before:g} -> {after:g}", status(path)))
        for path, (old, why) in self.skipped.items():
            rows.append((path or "<root>", old, f"skipped: {why}", ""))
        for path, (old, what) in self.internal.items():
            rows.append((path or "<root>", old, f"not replaceable: {what}", ""))
        if not rows:
            tail = "" if self.probed else f" ({NOT_PROBED})"
            return "ConversionReport: nothing to convert" + tail
        header = ("module", "old type", "new type", "in forward" if self.probed else "")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(2)]
        widths.append(max((len(r[2]) for r in [header, *rows] if r[3]), default=0))
        lines = []
        for a, b, c, d in [header, *rows]:
            line = f"{a:<{widths[0]}}  {b:<{widths[1]}}  "
            lines.append(line + (f"{c:<{widths[2]}}  {d}" if d else c))
        for path, (parent, op, how) in (self.read_by_parent or {}).items():
            lines.append(f"{path}: rate applied by {parent or '<root>'} ({op}); {how}")
        counts = [f"{len(self.replaced)} replaced", f"{len(self.skipped)} skipped"]
        if self.called is not None and self.replaced:
            counts.insert(1, f"{sum(p in self.called for p in self.replaced)} of them called")
        if self.rate_set:
            counts.append(f"{len(self.rate_set)} rates set")
        if self.internal:
            counts.append(f"{len(self.internal)} not replaceable")
        lines.append(", ".join(counts) + ("" if self.probed else f"; {NOT_PROBED}"))
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
    if (
        cls.__name__.endswith("DropPath")
        and cls.__module__.startswith("transformers.models.")
        and isinstance(getattr(module, "drop_prob", None), float | int)
    ):
        # Hugging Face's per-model copies (BeitDropPath, SwinDropPath, ...): all compute
        # x / keep * floor(keep + rand((N, 1, ..., 1))), one draw per sample, rescaled.
        return lambda p: dkn.DropPath(
            float(module.drop_prob) if p is None else p, mode="row", scale_by_keep=True
        )
    if cls.__name__ == "StochasticDepth" and cls.__module__.split(".")[0] == "torchvision":
        # torchvision always rescales kept samples by 1/(1-p) (and gives zeros at p = 1).
        return lambda p: dkn.DropPath(module.p if p is None else p, mode=module.mode)
    return None


def _is_dropkit(module: nn.Module) -> bool:
    from dropkit.mc.modes import is_dropkit_dropout

    return is_dropkit_dropout(module)


def _skip_reason(module: nn.Module) -> str | None:
    """Why a module that looks like dropout is left alone, or None if it does not."""
    if _is_dropkit(module) or type(module).__module__.startswith("dropkit."):
        return None  # already dropkit: converting twice is a no-op
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return "subclass of a torch dropout class; its forward may differ, not mapped"
    name = type(module).__name__.lower()
    if any(fragment in name for fragment in _DROPOUT_LIKE):
        return "dropout-like class with no known dropkit equivalent"
    return None


def _set_rate(path: str, module: nn.Module, p: float) -> float:
    """Set ``p`` on a module that already is a dropkit module; returns the old rate."""
    from dropkit.nn.learned.base import LearnedDropout

    if isinstance(module, LearnedDropout) or not isinstance(
        getattr(module, "p", None), float | int
    ):
        raise ValueError(
            f"convert: module {path or '<root>'!r} ({_type_name(module)}) is already a dropkit "
            f"module without a fixed rate p, so p={p} cannot be applied; leave p out, or build "
            "the model without it"
        )
    return float(module.p)


def _internal(module: nn.Module) -> str | None:
    """A float dropout rate > 0 that ``module`` applies inside its own forward, described; None
    when it has none. ``nn.MultiheadAttention`` and ``nn.RNN/LSTM/GRU`` (with more than one
    layer: torch applies ``dropout`` between layers) are certain; for other modules any float
    attribute named like a dropout rate (``attention_dropout``, ``attn_pdrop``) counts."""
    from dropkit.mc.modes import is_dropout_module

    if is_dropout_module(module):
        return None
    if isinstance(module, nn.MultiheadAttention | nn.RNNBase):
        rate = float(module.dropout)
        if rate <= 0 or (isinstance(module, nn.RNNBase) and module.num_layers < 2):
            return None
        where = "attention op" if isinstance(module, nn.MultiheadAttention) else "RNN op"
        return f"dropout={rate:g} inside torch's {where}"
    rates = [
        f"{name}={value:g}"
        for name, value in vars(module).items()
        if ("drop" in name.lower())
        and isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and value > 0
    ]
    return f"float rate {', '.join(rates)} in its forward" if rates else None


def _train_mode_calls(model: nn.Module, forward: Callable[[], object]) -> list:
    """The stochastic calls of one forward with every module without running statistics in
    train mode (what MC mode would want to sample); flags restored."""
    from dropkit.mc.modes import has_running_stats
    from dropkit.mc.probe import record

    flags = [(m, m.training) for m in model.modules()]
    try:
        for m, _ in flags:
            m.training = not has_running_stats(m)
        return record(model, forward)
    finally:
        for m, flag in flags:
            m.training = flag


def _probe(model: nn.Module, example_inputs: object, report: dict) -> None:
    """One probing forward (and MC mode's plan): fill ``called``, ``read_by_parent`` and what
    MC mode does with each ``internal`` entry."""
    from dropkit.mc.io import as_batch
    from dropkit.mc.modes import is_dropout_module
    from dropkit.mc.plan import plan_sampling

    batch = as_batch(example_inputs)
    dropouts = {id(m): n for n, m in model.named_modules() if is_dropout_module(m)}
    called: set[str] = set()
    handles = [
        m.register_forward_pre_hook(lambda m, args: called.add(dropouts[id(m)]))
        for m in {id(m): m for m in model.modules() if id(m) in dropouts}.values()
    ]
    forward = lambda: batch.clone()(model)  # noqa: E731  (clone: in-place layers on x)
    try:
        plan = plan_sampling(model, forward)
        calls, train, error = plan.calls, set(plan.train), None
    except ValueError as err:  # nothing stochastic, or an op MC mode cannot reach
        calls, train, error = _train_mode_calls(model, forward), set(), str(err)
    finally:
        for handle in handles:
            handle.remove()
    # Ops issued at the dispatcher (not by a dropout module), by issuing module.
    ops: dict[str, list] = {}
    for c in calls:
        if not c.op.startswith("module:"):
            ops.setdefault(c.module, []).append(c)

    def how(issuer: str, op: str) -> str:
        if error is not None:
            return f"dropkit.mc.predict raises: {error}"
        gate = [t for t in train if issuer == t or issuer.startswith(t + ".") or t == ""]
        mode = (
            f"puts {', '.join(g or '<root>' for g in sorted(gate))} in train mode and "
            if gate
            else ""
        )
        return f"dropkit.mc.predict {mode}samples {op} at the dispatcher"

    read_by_parent: dict[str, tuple[str, str, str]] = {}
    modules = dict(model.named_modules())
    for path in dropouts.values():
        if path in called:
            continue
        rate = getattr(modules[path], "p", None)
        parents = [a for a in ops if path.startswith(a + ".") or (a == "" and path)]
        for parent in sorted(parents, key=len, reverse=True):  # the nearest issuer first
            match = next(
                (c for c in ops[parent] if rate and c.rate and math.isclose(c.rate, rate)), None
            )
            if match is not None:
                read_by_parent[path] = (parent, match.op, how(parent, match.op))
                break
    for path, (kind, what) in list(report["internal"].items()):
        issued = ops.get(path)
        if issued:
            report["internal"][path] = (kind, f"{what}; {how(path, issued[0].op)}")
        else:
            report["internal"][path] = (kind, f"{what}; no random op ran in the probe forward")
    claimed = {*report["internal"], *report["skipped"], *(v[0] for v in read_by_parent.values())}
    for issuer, issued in ops.items():
        if issuer not in claimed:
            module = modules[issuer]
            what = f"{issued[0].op} issued in its forward"
            report["internal"][issuer] = (
                _type_name(module),
                f"{what}; {how(issuer, issued[0].op)}",
            )
    report["called"] = frozenset(called)
    report["read_by_parent"] = read_by_parent


def convert(
    model: nn.Module,
    *,
    p: float | None = None,
    inplace: bool = True,
    example_inputs: object = None,
) -> tuple[nn.Module, ConversionReport]:
    """Replace known dropout modules in ``model`` (any depth) with :mod:`dropkit.nn` modules.

    Replaced (matched by exact type, or by class name and module path for the peers):

    * ``torch.nn.Dropout``, ``Dropout1d``, ``Dropout2d``, ``Dropout3d``, ``AlphaDropout``,
      ``FeatureAlphaDropout`` -> the :mod:`dropkit.nn` class of the same name (``p``, ``inplace``);
    * timm's ``DropPath(drop_prob, scale_by_keep)`` -> ``DropPath(p, "row", scale_by_keep)``;
    * Hugging Face's per-model ``*DropPath(drop_prob)`` (``transformers.models.*``: BEiT, Swin,
      ConvNeXt, DINOv2, ...; ``x / q * floor(q + rand((N, 1, ..., 1)))``) ->
      ``DropPath(p, "row")``;
    * torchvision's ``StochasticDepth(p, mode)`` -> ``DropPath(p, mode)`` (it always rescales
      by ``1/(1-p)``).

    Each new module keeps the old one's rate (or ``p`` when given: it overrides every rate),
    ``inplace``, mode and ``training`` flag. Modules that already are dropkit modules are not
    rebuilt (converting twice changes nothing); ``p``, when given, is set on them too
    (``report.rate_set``), and a dropkit module without a fixed rate (a learned-rate layer)
    makes ``p`` raise. Subclasses of the torch classes and other classes whose name says
    dropout/drop-path/stochastic-depth/DropBlock/DropConnect are listed in ``report.skipped``
    and left as they were. A module registered at several paths is replaced by one shared new
    module. Hooks registered on a replaced module are not carried over.

    Dropout that a module applies inside its own forward from a float rate cannot be replaced
    and is listed in ``report.internal`` (``nn.MultiheadAttention``, multi-layer
    ``nn.RNN/LSTM/GRU`` with ``dropout=``, Hugging Face attention with an
    ``attention_dropout`` float); ``p`` does not change it. With ``example_inputs`` (a tensor,
    a tuple of tensors or a dict/``BatchEncoding`` of keyword tensors, as for
    :func:`dropkit.mc.predict`) one probing forward of the converted model (every module
    without running statistics in train mode, under ``no_grad``, flags and random state
    restored) tells which replaced modules run (``report.called``) and which never run but lend
    their rate to a parent that applies it itself (``report.read_by_parent``: Hugging Face
    attention reads ``self.dropout.p``), with how :func:`dropkit.mc.predict` samples each.

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
        p: optional drop rate in [0, 1] for every replaced module and every dropkit module.
        inplace: when False, convert a ``copy.deepcopy`` of ``model`` and leave it untouched.
        example_inputs: optional inputs for one probing forward; without them ``report.called``
            and ``report.read_by_parent`` are None ("not probed").

    Returns:
        ``(model, report)``: use the returned model (a root dropout module is itself replaced).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model, report = convert(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)))
        >>> model[1]
        Dropout(p=0.1, inplace=False)
        >>> dict(report.counts), report.status("1")
        ({'torch.nn.Dropout': 1}, 'not probed')
        >>> _, report = convert(model, example_inputs=torch.randn(3, 2))
        >>> report.replaced, report.called
        ({}, frozenset({'1'}))
    """
    if p is not None:
        p = check_p(p, "convert")
    if not inplace:
        model = copy.deepcopy(model)
    # Plan every replacement first, so that a bad rate raises before anything is changed.
    new_of: dict[int, nn.Module] = {}
    report: dict = {"replaced": {}, "skipped": {}, "rate_set": {}, "internal": {}}
    rates: list[tuple[nn.Module, float]] = []
    for path, module in model.named_modules():
        build = _builder(module)
        if build is None:
            if p is not None and _is_dropkit(module):
                old = _set_rate(path, module, p)
                rates.append((module, p))
                report["rate_set"][path] = (_type_name(module), old, p)
            reason = _skip_reason(module)
            if reason is not None:
                report["skipped"][path] = (_type_name(module), reason)
            elif (what := _internal(module)) is not None and not _is_dropkit(module):
                report["internal"][path] = (_type_name(module), what)
            continue
        try:
            new = build(p)
        except (TypeError, ValueError) as err:
            raise ValueError(f"convert: cannot convert module {path!r}: {err}") from err
        new.train(module.training)
        new_of[id(module)] = new
        report["replaced"][path] = (_type_name(module), _type_name(new))
    for module, rate in rates:
        module.p = rate
    # named_modules() lists a shared module once; walk every edge so each parent is updated.
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in new_of:
                parent.add_module(name, new_of[id(child)])
    model = new_of.get(id(model), model)
    if example_inputs is not None:
        _probe(model, example_inputs, report)
    return model, ConversionReport(**report)
