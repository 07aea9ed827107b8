"""Find what is stochastic in a model from what its forward runs, not from its source.

One probing forward records every random operator the forward issues and the module whose
forward issued it. The recording sits at torch's dispatcher (a ``TorchDispatchMode``), under
every Python and C++ composite, so one rule sees ``F.dropout*``, ``alpha_dropout``,
``feature_alpha_dropout``, SDPA's ``dropout_p`` (CPU math path, or the fused kernels' own
``dropout_p`` argument), ``nn.MultiheadAttention``'s internal dropout and the inter-layer
dropout of ``nn.RNN/LSTM/GRU`` alike: on the CPU all of them end in ``aten.bernoulli_``, on
CUDA in ``aten.native_dropout`` or a fused attention kernel. The module stack comes from
forward pre/post hooks on the model's own modules.

dropkit's and torch's dropout modules are recorded by their type when they are called with a
rate other than 0 (their masks may come from dropkit's counter-based Philox stream, which
issues no aten random op); random ops inside them are theirs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .modes import drop_rate, is_dropout_module

# aten operators that draw random numbers (overload packet names)
RANDOM_OPS = frozenset(
    [
        "bernoulli",
        "bernoulli_",
        "native_dropout",
        "rand",
        "rand_like",
        "randn",
        "randn_like",
        "randint",
        "randint_like",
        "randperm",
        "normal",
        "normal_",
        "uniform_",
        "exponential_",
        "geometric_",
        "cauchy_",
        "log_normal_",
        "random_",
        "multinomial",
        "poisson",
        "rrelu_with_noise",
        "_fused_dropout",
        "_standard_gamma",
    ]
)


@dataclass(frozen=True)
class Call:
    """One stochastic call of a forward: the issuing module's path (``""`` the root), the op
    (an aten operator like ``"aten.bernoulli_.float"`` or ``"module:torch.nn.Dropout"``) and
    its rate when known."""

    module: str
    op: str
    rate: float | None


def _dropout_rate(func, args, kwargs) -> float | None:
    """The ``dropout_p`` of a fused attention kernel, None when it has none."""
    for i, arg in enumerate(func._schema.arguments):
        if arg.name == "dropout_p":
            value = kwargs.get("dropout_p", args[i] if i < len(args) else 0.0)
            return float(value)
    return None


def random_op(func, args, kwargs) -> float | bool | None:
    """False when ``func`` draws nothing; else its rate (None when it has no single rate)."""
    packet = func.overloadpacket.__name__
    if "scaled_dot_product" in packet or "flash_attention" in packet:
        rate = _dropout_rate(func, args, kwargs)
        return rate if rate else False
    if packet not in RANDOM_OPS:
        return False
    keep = args[1] if len(args) > 1 else kwargs.get("p")
    if packet.startswith("bernoulli") and isinstance(keep, float):
        return 1.0 - keep  # bernoulli_(keep probability): the drop rate
    if packet == "native_dropout":
        train = args[2] if len(args) > 2 else kwargs.get("train")
        return float(args[1]) if train is None or train else False
    return None


class ModuleStack:
    """Pre/post forward hooks on every module of a model: ``top`` is the innermost module
    running now (its path and the module), ``inside`` the dropout module it runs in, if any."""

    def __init__(self, model: nn.Module) -> None:
        self.names = {id(m): n for n, m in model.named_modules()}
        self.stack: list[tuple[str, nn.Module]] = []
        self.entered: list[tuple[str, nn.Module]] = []  # every module entered, in order
        self._handles = []
        for module in {id(m): m for m in model.modules()}.values():
            self._handles.append(module.register_forward_pre_hook(self._push))
            self._handles.append(module.register_forward_hook(self._pop, always_call=True))

    def _push(self, module, args):
        entry = (self.names[id(module)], module)
        self.stack.append(entry)
        self.entered.append(entry)

    def _pop(self, module, args, out):
        if self.stack and self.stack[-1][1] is module:
            self.stack.pop()

    def dropout_module(self) -> tuple[str, nn.Module] | None:
        """The outermost dropout-family module on the stack."""
        return next((e for e in self.stack if is_dropout_module(e[1])), None)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class _Recorder(TorchDispatchMode):
    def __init__(self, stack: ModuleStack) -> None:
        super().__init__()
        self.stack = stack
        self.calls: list[Call] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.stack.stack and self.stack.dropout_module() is None:
            rate = random_op(func, args, kwargs)
            if rate is not False:
                self.calls.append(Call(self.stack.stack[-1][0], str(func), rate))
        return func(*args, **kwargs)


def record(model: nn.Module, forward) -> list[Call]:
    """The stochastic calls of one ``forward()`` of ``model`` with its flags as they are now.

    Run under ``no_grad`` inside ``torch.random.fork_rng`` (the caller's generators are left as
    they were), with the eval fast path of ``nn.TransformerEncoderLayer`` /
    ``nn.MultiheadAttention`` disabled (it skips their dropout)."""
    stack = ModuleStack(model)
    recorder = _Recorder(stack)
    cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=cuda), torch.no_grad(), no_fast_path(), recorder:
            forward()
    finally:
        stack.remove()
    calls = list(recorder.calls)
    seen = set()
    for name, module in stack.entered:
        rate = drop_rate(module)
        if is_dropout_module(module) and rate != 0.0 and name not in seen:
            seen.add(name)
            cls = type(module)
            calls.append(Call(name, f"module:{cls.__module__}.{cls.__qualname__}", rate))
    return calls


@contextlib.contextmanager
def no_fast_path() -> Iterator[None]:
    """Disable torch's MHA/TransformerEncoderLayer eval fast path (it applies no dropout)."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None:  # pragma: no cover - older torch
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)
