"""Explicit dropout streams: every call's key a pure function of (stream seed, call site, count).

Without a stream, a dropout call that is given no ``seed=`` draws a fresh 63-bit key from
torch's global generator (:func:`dropkit.rng.draw_seed`), so ``torch.manual_seed`` reproduces a
run. Inside ``with dropkit.rng.stream(seed):`` such a call takes its key from the stream
instead:

* without ``model``, the ``c``-th draw of the stream (``c = 0, 1, ...``, in call order) uses
  ``key = call_key(seed, 0, c)``;
* with ``model``, the ``c``-th draw issued while the module named ``name`` in
  ``model.named_modules()`` is running (the innermost one) uses
  ``key = call_key(seed, site(name), c)``, ``site(name)`` the first 8 bytes of
  ``blake2b(name)`` (little-endian) with the low bit set: a layer's masks do not move when
  another layer is skipped (conditional computation) or another named layer is added. Calls
  outside the model's modules use site 0.

``call_key`` is a splitmix64 chain (Steele, Lea & Flood 2014, "Fast splittable pseudorandom
number generators", OOPSLA): ``key = mix(mix(mix(seed) ^ site) ^ c) >> 1``, a 63-bit value.
Element ``i`` of the call's mask keeps its Philox stream position ``offset + i`` (plus a
data-parallel rank's first global row, see :mod:`dropkit.distributed`).

An explicit ``seed=`` or ``generator=`` on a call still wins over the stream. The stream's
state (``seed`` and the counters) is a small dict: :meth:`Stream.state_dict` /
:meth:`Stream.load_state_dict` checkpoint and resume it exactly, and
:meth:`Stream.checkpoint_context` lets ``torch.utils.checkpoint`` replay the same keys when it
recomputes a segment. One stream is active at a time per process (not per thread).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from . import backend

_M64 = (1 << 64) - 1


def _mix(z: int) -> int:
    """The splitmix64 output function of ``z + golden gamma`` (64-bit in, 64-bit out)."""
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def call_key(seed: int, site: int, call: int) -> int:
    """The Philox key of the ``call``-th draw at call site ``site`` of a stream keyed ``seed``.

    ``mix(mix(mix(seed) ^ site) ^ call) >> 1`` with ``mix`` splitmix64's output function: a
    63-bit int, so it fits the int64 seed tensors of :mod:`dropkit.rng`.

    Example:
        >>> call_key(0, 0, 0) == call_key(0, 0, 0) != call_key(0, 0, 1)
        True
    """
    return _mix(_mix(_mix(seed & _M64) ^ site) ^ call) >> 1


def site_of(name: str) -> int:
    """The call site of the module named ``name`` (``""``: the model itself): the first 8 bytes
    of ``blake2b(name)``, little-endian, with the low bit set (never site 0)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") | 1


def _make_key_opaque() -> None:
    """Wrap :meth:`Stream.key` in ``torch.compiler.disable`` once, when the first stream is made.

    ``torch.compiler.disable`` imports ``torch._dynamo`` (about 1.5 s), so applying it at class
    definition would put that cost on every ``import dropkit``. Streams are made in eager code,
    so ``key`` is opaque before any compiled code can call it.
    """
    if not getattr(Stream.key, "_dropkit_opaque", False):
        opaque = torch.compiler.disable(Stream.key)
        opaque._dropkit_opaque = True
        Stream.key = opaque


class Stream:
    """A dropout stream: the source of keys for calls that get no ``seed=``/``generator=``.

    Use :func:`stream` to make one. ``shard`` (set by :mod:`dropkit.distributed`) maps a call's
    number of mask positions ``n`` and its caller (``(module, input dims)`` of the innermost
    running module of ``model``, or None) to the stream position of the first local element;
    None means 0 (one process sees the whole tensor).
    """

    def __init__(self, seed: int, model: nn.Module | None = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"stream seed must be an int in [0, 2^63), got {seed!r}")
        self.seed = seed
        self.counts: dict[int, int] = {}
        self.shard: Callable[[int, tuple | None], int] | None = None
        # (site, module, dims of its first tensor argument) of the running modules, innermost last
        self._sites: list[tuple[int, nn.Module, int | None]] = []
        self._previous: list[Stream | None] = []
        self._hooks: list[Any] = []
        if model is not None:
            self._watch(model)
        _make_key_opaque()

    # ------------------------------------------------------------------ keys
    def next_key(self) -> int:
        """The key of the next draw at the current call site (advances that site's counter)."""
        site = self._sites[-1][0] if self._sites else 0
        call = self.counts.get(site, 0)
        self.counts[site] = call + 1
        return call_key(self.seed, site, call)

    # Opaque to torch.compile (a graph break, see _make_key_opaque): traced, the key would be a
    # constant and every step would compile a new graph; as a graph input it is one graph.
    def key(self, offset: int, numel: int | None) -> tuple[torch.Tensor, int]:
        """``(key as a 0-d int64 tensor, first stream position)`` of a call that draws its own
        seed and uses ``numel`` mask positions from ``offset``."""
        seed = torch.tensor(self.next_key(), dtype=torch.int64)
        if self.shard is None:
            return seed, offset
        if numel is None:
            raise RuntimeError(
                "dropkit: this op does not report its mask size, so it cannot take part in "
                "data-parallel mode; pass seed= and offset= explicitly, or call it outside "
                "dropkit.distributed.data_parallel"
            )
        return seed, offset + self.shard(numel, self._sites[-1][1:] if self._sites else None)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The stream's state: ``{"seed": int, "counts": {site: draws}}`` (plain Python)."""
        return {"seed": self.seed, "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the next keys are those the saved stream would draw)."""
        self.seed = int(state["seed"])
        self.counts = {int(k): int(v) for k, v in state["counts"].items()}

    def checkpoint_context(self) -> tuple[Any, Any]:
        """A ``context_fn`` result for ``torch.utils.checkpoint.checkpoint(use_reentrant=False)``:
        the recomputation replays the keys the forward drew (torch restores its own generator
        there, but not a stream).

        Usage: ``checkpoint(f, x, use_reentrant=False, context_fn=s.checkpoint_context)``.
        """
        saved: dict[str, Any] = {}

        @contextlib.contextmanager
        def forward() -> Iterator[None]:
            saved["state"] = (dict(self.counts), list(self._sites))
            yield

        @contextlib.contextmanager
        def recompute() -> Iterator[None]:
            after = (self.counts, self._sites)
            self.counts, self._sites = dict(saved["state"][0]), list(saved["state"][1])
            try:
                yield
            finally:
                self.counts, self._sites = after

        return forward(), recompute()

    # ------------------------------------------------------------------ activation
    def __enter__(self) -> Stream:
        self._previous.append(backend.active_stream)
        backend.active_stream = self
        return self

    def __exit__(self, *exc: object) -> None:
        backend.active_stream = self._previous.pop()

    def close(self) -> None:
        """Remove the module hooks installed for ``model`` (the counters are kept)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def _watch(self, model: nn.Module) -> None:
        root = site_of("")

        def enter(site: int, module: nn.Module, args: tuple) -> None:
            if site == root:  # the model itself starts a forward: forget a stack left by an error
                self._sites.clear()
            ndim = args[0].dim() if args and isinstance(args[0], torch.Tensor) else None
            self._sites.append((site, module, ndim))

        def leave(site: int, module: nn.Module, args: tuple, out: object) -> None:
            if self._sites and self._sites[-1][0] == site:
                self._sites.pop()

        for name, module in model.named_modules():
            site = site_of(name)
            self._hooks.append(module.register_forward_pre_hook(functools.partial(enter, site)))
            self._hooks.append(module.register_forward_hook(functools.partial(leave, site)))

    def __repr__(self) -> str:
        return f"Stream(seed={self.seed}, draws={sum(self.counts.values())})"


def stream(seed: int, model: nn.Module | None = None) -> Stream:
    """A dropout stream keyed ``seed``; use it as a context manager around training steps.

    Every dropkit functional and module called inside ``with stream(seed):`` without ``seed=``
    or ``generator=`` takes key ``call_key(seed, site, c)`` (see the module docstring) instead
    of a draw from torch's generator; element ``i`` keeps position ``offset + i``. With
    ``model``, each call site is the module issuing the call (its name in
    ``model.named_modules()``) with its own call count; forward hooks on ``model``'s modules
    track it (:meth:`Stream.close` removes them). The same stream object can be entered again
    at every step; its counters carry on. Torch's own dropout (``torch.nn.Dropout``) is not
    affected: convert the model first (:func:`dropkit.convert`).

    Example:
        >>> import torch
        >>> from dropkit import functional as F
        >>> with stream(7):
        ...     a = F.dropout(torch.ones(8), 0.5)
        >>> with stream(7):
        ...     b = F.dropout(torch.ones(8), 0.5)
        >>> torch.equal(a, b)
        True
    """
    return Stream(seed, model)


def current() -> Stream | None:
    """The active stream, or None (calls draw from torch's generator)."""
    return backend.active_stream
