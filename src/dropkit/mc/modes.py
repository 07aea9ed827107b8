"""MC mode: switch on only the model's dropout, leave BatchNorm and the rest in eval.

Putting a whole model in ``train()`` for Monte Carlo dropout also makes BatchNorm normalise
with batch statistics and update its running statistics (keras-team/keras#9412,
open-mmlab/mmsegmentation#2441). :func:`enable` puts the model in eval and then sets
``training = True`` on the dropout-family modules only, plus (``functional``) the modules
whose own ``forward`` applies dropout through a function call.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import numbers
import re
import warnings
from collections.abc import Iterator

from torch import nn

from dropkit import nn as dkn
from dropkit.nn.learned.base import LearnedDropout

logger = logging.getLogger(__name__)

FUNCTIONAL_MODES = (False, "auto", True)
_STATS_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
# A call such as ``F.dropout(``, ``torch.nn.functional.scaled_dot_product_attention(`` or
# ``drop_path(``; group 1 is the dotted prefix (calls on ``self.`` are submodules, not functions).
_CALL = re.compile(r"(?<![\w.])((?:[A-Za-z_]\w*\.)*)([A-Za-z_]\w*)\s*\(")
_RANDOM_FUNCTION = re.compile(
    r"dropout|drop_path|stochastic_depth|drop_block|dropconnect|"
    r"scaled_dot_product_attention|multi_head_attention_forward",
    re.IGNORECASE,
)


def is_dropkit_dropout(module: nn.Module) -> bool:
    """A :mod:`dropkit.nn` dropout module (``DropoutModule``, ``WeightDrop``,
    ``DropConnectLinear``, or a learned-rate layer of :mod:`dropkit.nn.learned`)."""
    return isinstance(
        module, dkn.DropoutModule | dkn.WeightDrop | dkn.DropConnectLinear | LearnedDropout
    )


def is_dropout_module(module: nn.Module) -> bool:
    """Dropout family: torch's ``Dropout``/``Dropout1d/2d/3d``/``AlphaDropout``/
    ``FeatureAlphaDropout``, every dropkit dropout module, timm's ``DropPath`` and
    torchvision's ``StochasticDepth`` (matched by class name and package, not imported)."""
    if isinstance(module, nn.modules.dropout._DropoutNd) or is_dropkit_dropout(module):
        return True
    cls = type(module)
    package = cls.__module__.split(".")[0]
    return (cls.__name__, package) in (("DropPath", "timm"), ("StochasticDepth", "torchvision"))


def drop_rate(module: nn.Module) -> float | None:
    """The module's drop rate (``p``, or timm's ``drop_prob``), None when it has none."""
    for name in ("p", "drop_prob"):
        value = getattr(module, name, None)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    return None


def has_running_stats(module: nn.Module) -> bool:
    """BatchNorm, InstanceNorm with ``track_running_stats``, or any module with a
    ``running_mean`` / ``running_var`` / ``num_batches_tracked`` buffer: train mode would
    normalise with batch statistics and update the running ones."""
    if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
        return True
    return any(name in _STATS_BUFFERS for name, _ in module.named_buffers(recurse=False))


@functools.lru_cache(maxsize=512)
def _forward_calls_dropout(cls: type) -> bool:
    """Whether ``cls.forward``'s source calls a dropout-like function and reads ``training``."""
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):  # built in, or defined where no source is kept
        return False
    if "training" not in source:
        return False
    for prefix, name in _CALL.findall(source):
        if _RANDOM_FUNCTION.search(name) and not prefix.startswith("self."):
            return True
    return False


def _torch_gated_dropout(module: nn.Module) -> bool:
    """torch.nn layers whose dropout follows ``self.training`` without a dropout submodule
    (``MultiheadAttention``, ``LSTM``/``GRU``/``RNN`` with ``dropout > 0``), or whose eval fast
    path skips their dropout submodules (``TransformerEncoderLayer``)."""
    rate = getattr(module, "dropout", None)
    if isinstance(rate, numbers.Real) and not isinstance(rate, bool):
        return rate > 0 and isinstance(module, nn.MultiheadAttention | nn.RNNBase)
    return isinstance(module, nn.TransformerEncoderLayer) and any(
        is_dropout_module(c) and (drop_rate(c) or 0) > 0 for c in module.children()
    )


def functional_parents(model: nn.Module, functional: bool | str) -> list[str]:
    """Names of the non-dropout modules that ``functional`` puts in train mode.

    * ``False``: none.
    * ``"auto"``: modules whose ``forward`` source calls a dropout-like function (a name
      containing ``dropout``, ``drop_path``, ``stochastic_depth``, ``drop_block``,
      ``dropconnect``, or ``scaled_dot_product_attention`` / ``multi_head_attention_forward``,
      not called on ``self.``) and mentions ``training``, e.g. ``F.dropout(x, 0.1,
      training=self.training)`` or ``sdpa(q, k, v, dropout_p=self.p if self.training else 0)``;
      plus torch's ``MultiheadAttention`` and ``LSTM``/``GRU``/``RNN`` with ``dropout > 0`` and
      ``TransformerEncoderLayer`` (its eval fast path would skip its dropout).
    * ``True``: every module (the broad fallback for code that cannot be inspected).

    Modules with running statistics (:func:`has_running_stats`) are never included.
    """
    if functional not in FUNCTIONAL_MODES:
        raise ValueError(f"functional must be one of {FUNCTIONAL_MODES}, got {functional!r}")
    if functional is False:
        return []
    names = []
    for name, module in model.named_modules():
        if is_dropout_module(module):
            continue
        if functional is True:
            chosen = True
        elif type(module).__module__.startswith("torch.nn."):
            chosen = _torch_gated_dropout(module)
        else:
            chosen = _forward_calls_dropout(type(module))
        if not chosen:
            continue
        if has_running_stats(module):
            if functional == "auto":
                warnings.warn(
                    f"dropkit.mc: {name or '<root>'} ({type(module).__name__}) calls dropout in "
                    "its forward but has running statistics, so it stays in eval and that "
                    "dropout is not sampled; move the dropout into a dropkit.nn module",
                    UserWarning,
                    stacklevel=3,
                )
            continue
        names.append(name)
    return names


class MCHandle:
    """What :func:`enable` changed; :meth:`restore` puts every ``training`` flag back.

    Attributes:
        dropout: names of the dropout-family modules put in train mode.
        functional: names of the other modules put in train mode (``functional`` option).
    """

    def __init__(self, model: nn.Module, dropout: list[str], functional: list[str]) -> None:
        self.model = model
        self.dropout = tuple(dropout)
        self.functional = tuple(functional)
        self._flags = [(m, m.training) for m in model.modules()]
        self._restored = False

    def _apply(self) -> None:
        self.model.eval()
        for name in self.dropout + self.functional:
            self.model.get_submodule(name).training = True

    def restore(self) -> None:
        """Set every module's ``training`` flag back to its value before :func:`enable`."""
        if not self._restored:
            for module, flag in self._flags:
                module.training = flag
            self._restored = True

    def __repr__(self) -> str:
        return f"MCHandle(dropout={list(self.dropout)}, functional={list(self.functional)})"


def check_sampled(model: nn.Module, dropout: list[str], functional: list[str]) -> None:
    """A model must have something to sample: a dropout module with a rate > 0 (or an unknown
    rate), or a functional-dropout parent."""
    if functional:
        return
    if not dropout:
        raise ValueError(
            f"dropkit.mc: {type(model).__name__} has no dropout module, so every MC sample would "
            "be the same. Add dropout layers (dropkit.nn or torch.nn.Dropout*), turn hand-written "
            "dropout-like layers into dropkit.nn modules with dropkit.convert(model), or pass "
            "functional='auto' / True if forward calls torch.nn.functional.dropout"
        )
    rates = [drop_rate(model.get_submodule(n)) for n in dropout]
    if all(r == 0.0 for r in rates):
        raise ValueError(
            f"dropkit.mc: every dropout module of {type(model).__name__} has rate p = 0 "
            f"({', '.join(dropout)}), so every MC sample would be the same; set a rate > 0 "
            "(e.g. module.p = 0.1) or convert the model with dropkit.convert(model, p=0.1)"
        )


def enable(model: nn.Module, *, functional: bool | str = "auto") -> MCHandle:
    """Put ``model`` in MC mode: eval everywhere, train mode only where dropout is sampled.

    ``model.eval()`` is called, then ``training = True`` is set (on that module alone, not its
    children) on every dropout-family module (:func:`is_dropout_module`) and on the modules
    that ``functional`` selects (:func:`functional_parents`); BatchNorm and every other module
    with running statistics stays in eval, so its statistics are used and never updated.
    Call ``handle.restore()`` (or use :func:`mc_mode`) to put every flag back.

    Raises ``ValueError`` when nothing would be sampled (no dropout module, or every rate 0).
    """
    dropout = [name for name, m in model.named_modules() if is_dropout_module(m)]
    parents = functional_parents(model, functional)
    check_sampled(model, dropout, parents)
    handle = MCHandle(model, dropout, parents)
    try:
        handle._apply()
    except BaseException:
        handle.restore()
        raise
    logger.debug("dropkit.mc: sampling %s", handle)
    return handle


@contextlib.contextmanager
def mc_mode(model: nn.Module, *, functional: bool | str = "auto") -> Iterator[MCHandle]:
    """Context manager form of :func:`enable`; flags are restored on exit, also on exceptions.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3),
        ...                             torch.nn.Dropout(0.5))
        >>> with mc_mode(model):
        ...     print(model[1].training, model[2].training)
        False True
        >>> model[2].training  # a fresh module is in train mode, and is again
        True
    """
    handle = enable(model, functional=functional)
    try:
        yield handle
    finally:
        handle.restore()
