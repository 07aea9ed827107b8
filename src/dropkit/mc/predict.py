"""``predict``: T Monte Carlo dropout samples of a model, by loop, replicated batch or prefix."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import numbers
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from dropkit.rng.backend import SEED_BOUND

from .budget import copies_for, default_budget, probe_bytes
from .modes import drop_rate, is_dropkit_dropout, mc_mode
from .prefix import NoPrefixError, PrefixPlan, model_signature, plan_for, replicate
from .result import TASKS, MCResult, summarize
from .sampling import MAX_SAMPLES, Sampler, consistent_supported, splittable, unsupported_message

logger = logging.getLogger(__name__)

STRATEGIES = ("auto", "loop", "batched", "prefix")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_args(samples, task, strategy, seed, chunk_size, memory_budget, tau) -> None:
    if not _is_int(samples) or samples < 1:
        raise ValueError(f"samples must be an int >= 1 (the number T of passes), got {samples!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if seed is not None and not (_is_int(seed) and 0 <= seed < SEED_BOUND):
        raise ValueError(f"seed must be None or an int in [0, 2^63), got {seed!r}")
    if chunk_size is not None and not (_is_int(chunk_size) and chunk_size >= 1):
        raise ValueError(
            f"chunk_size must be None (all T at once) or an int >= 1, got {chunk_size!r}"
        )
    if memory_budget is not None and not (_is_int(memory_budget) and memory_budget >= 1):
        raise ValueError(
            f"memory_budget must be None (the default budget) or an int >= 1 (bytes), "
            f"got {memory_budget!r}"
        )
    if tau is not None and not (isinstance(tau, numbers.Real) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be None or a finite number > 0 (the precision), got {tau!r}")


def _batches(x, targets) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    if isinstance(x, torch.Tensor):
        yield x, targets
        return
    if targets is not None:
        raise ValueError(
            "targets must be None when x is a DataLoader; yield (x, y) batches instead"
        )
    for batch in x:
        if isinstance(batch, torch.Tensor):
            batch = (batch,)
        if not (isinstance(batch, tuple | list) and len(batch) in (1, 2)) or not isinstance(
            batch[0], torch.Tensor
        ):
            raise TypeError(
                "a DataLoader for dropkit.mc.predict must yield tensor batches x, (x,) or (x, y); "
                f"got {type(batch).__name__}: {batch!r:.80}"
            )
        yield batch[0], (batch[1] if len(batch) == 2 else None)


def _progress(batches: Iterable, enabled: bool, total: int | None) -> Iterable:
    if not enabled:
        return batches
    try:
        from tqdm.auto import tqdm
    except ImportError:  # no bar without tqdm
        return batches
    return tqdm(batches, total=total, desc="MC dropout", unit="batch")


def _device(model: nn.Module) -> torch.device | None:
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return None


def _check_output(out: object, rows: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"dropkit.mc.predict needs a model that returns a tensor, got {type(out).__name__}"
        )
    if out.dim() == 0 or out.shape[0] != rows:
        raise ValueError(
            f"the model output {tuple(out.shape)} does not keep the batch of {rows} rows in dim 0; "
            "batched and prefix strategies need it (use strategy='loop')"
        )
    return out


def _chunks(samples: int, size: int) -> list[range]:
    return [range(t, min(t + size, samples)) for t in range(0, samples, size)]


# model -> (its signature and device, {(strategy, input shape without N, dtype, rates, consistent):
# (bytes of one copy, its rows)}). A probe costs a forward of one copy, about as much as a whole
# predict of a small batch, so repeated calls reuse the costs; weak keys: a collected model leaves
# no entry.
_COSTS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict]] = weakref.WeakKeyDictionary()
_MAX_COSTS = 32  # input shapes kept per model (variable-length inputs would grow it forever)


class _Chunking:
    """Copies of the batch per forward: ``chunk_size``, or the most that fit ``memory_budget``.

    The cost of one copy is probed (:func:`dropkit.mc.budget.probe_bytes`) once per strategy,
    input shape without the batch dim, dtype, dropout rates and ``consistent``, and kept across
    calls while the model's modules, tensors and sampled modules stay the same. It is scaled to
    the rows of each batch, but a smaller batch (a DataLoader's last) keeps the probed cost:
    what one copy allocates whatever its rows (a DropConnect weight mask) does not shrink.
    """

    def __init__(
        self,
        model: nn.Module,
        samples: int,
        chunk_size: int | None,
        memory_budget: int | None,
        device: torch.device | None,
        *,
        sampled: Sequence[nn.Module],
        consistent: bool,
        signature: Callable[[], tuple],
    ) -> None:
        self.model = model
        self.samples = samples
        self.chunk_size = chunk_size
        self.budget = memory_budget
        self.device = device if device is not None else torch.device("cpu")
        self._sampled = sampled
        self._consistent = consistent
        self._signature = signature  # a call: only worked out if a cost is needed
        self._costs: dict | None = None
        self._variant: tuple = ()

    def costs(self) -> dict:
        """The model's cached costs, emptied first if the model has changed as for the prefix
        plan (:func:`dropkit.mc.prefix.model_signature`) or moved."""
        if self._costs is None:
            depends = (self._signature(), self.device)
            entry = _COSTS.get(self.model)
            if entry is None or entry[0] != depends:
                entry = _COSTS[self.model] = (depends, {})
            self._costs = entry[1]
            # a rate of 0 may skip the mask, and consistent forwards draw their own masks
            self._variant = (tuple(drop_rate(m) for m in self._sampled), self._consistent)
        return self._costs

    def size(self, x: torch.Tensor, strategy: str, forward: Callable, root, sampler) -> int:
        """Copies per forward for batch ``x``; ``forward(k)`` runs ``k`` copies and ``root`` is
        the module it calls."""
        if self.chunk_size is not None:
            return min(self.chunk_size, self.samples)
        if self.samples == 1:
            return 1
        costs = self.costs()
        key = (strategy, tuple(x.shape[1:]), x.dtype, *self._variant)
        if key not in costs:
            if len(costs) >= _MAX_COSTS:
                costs.clear()
            costs[key] = (self._probe(forward, root, sampler), x.shape[0])
        if self.budget is None:  # read once: the free CUDA memory moves as chunks run
            self.budget = default_budget(self.device)
        cost, rows = costs[key]
        size = copies_for(cost * max(1.0, x.shape[0] / max(rows, 1)), self.samples, self.budget)
        logger.debug(
            "dropkit.mc: chunk_size=%d (%s, %d bytes per copy of %d rows, budget %d bytes)",
            size, strategy, cost, rows, self.budget,
        )  # fmt: skip
        return size

    def _probe(self, forward: Callable, root: nn.Module, sampler) -> int:
        """One copy's bytes. Its output is dropped rather than kept as sample 0: batched and
        prefix would then differ from the unchunked run in rounding (another matmul shape) and,
        without consistent masks, in which draws each sample gets. Its draws come from a forked
        generator for the same reason: the samples do not depend on whether it ran."""
        sampler.begin([0])
        device = self.device
        accelerated = [device] if device.type != "cpu" else []
        with torch.random.fork_rng(devices=accelerated, device_type=device.type):
            return probe_bytes(lambda: forward(1), [root, *self.model.modules()], device)


def _run(model, x, samples, chunking, strategy, plan: PrefixPlan | None, sampler) -> torch.Tensor:
    n = x.shape[0]
    if strategy == "loop":
        outs = []
        for t in range(samples):
            sampler.begin([t])
            outs.append(_check_output(model(x.clone()), n))  # clone: in-place layers on x
        return torch.stack(outs)
    values = plan.run_prefix(x) if strategy == "prefix" else None

    def forward(k: int):
        return plan.run_suffix(values, k) if strategy == "prefix" else model(replicate(x, k))

    root = plan.suffix if strategy == "prefix" else model
    outs = []
    for ts in _chunks(samples, chunking.size(x, strategy, forward, root, sampler)):
        k = len(ts)
        sampler.begin(ts)
        out = forward(k)
        outs.append(_check_output(out, k * n).reshape(k, n, *out.shape[1:]))
    return torch.cat(outs)


def predict(
    model: nn.Module,
    x: torch.Tensor | Iterable,
    samples: int = 50,
    *,
    task: str = "classification",
    strategy: str = "auto",
    seed: int | None = None,
    consistent: bool = False,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    tau: float | None = None,
    targets: torch.Tensor | None = None,
    progress: bool = False,
    functional: bool | str = "auto",
) -> MCResult:
    r"""Monte Carlo dropout (Gal & Ghahramani 2016): ``samples`` stochastic passes, summarised.

    The model runs in MC mode (:func:`dropkit.mc.mc_mode`): only dropout samples, BatchNorm and
    the rest stay in eval, under ``torch.no_grad()``; every ``training`` flag is restored after.

    Strategies (``chunk_size``: at most that many copies of the batch in one forward; by
    default as many as fit ``memory_budget``):

    * ``"loop"``: T forwards of the batch.
    * ``"batched"``: the batch replicated T times along dim 0, sample-major.
    * ``"prefix"``: the deterministic part upstream of the dropout runs once per batch (traced
      with ``torch.fx``, see :mod:`dropkit.mc.prefix`), only the rest sees the replicated
      batch; falls back to ``"batched"`` (logged at debug level) when the model cannot be
      traced or has no deterministic prefix. The split (or the reason there is none) is
      cached per model and reused while its modules, parameters, buffers and sampled modules
      stay the same (:func:`dropkit.mc.prefix.clear_plan_cache` after changing a plain
      attribute that ``forward`` reads).
    * ``"auto"``: ``"prefix"`` where available, else ``"batched"``; ``"loop"`` when a module's
      input has no batch dim (``EmbeddingDropout`` applied to a weight).

    Batched and prefix need the batch in dim 0 of the input, of every dropout input and of the
    output. Modules with one mask per forward for the whole batch (DropConnect, WeightDrop,
    ``DropPath(mode="batch")``, ...) run once per copy, so every strategy samples the same
    distribution. With ``seed`` the draws are reproducible (torch's generators are seeded
    inside ``torch.random.fork_rng``, so the caller's random state is untouched).

    ``consistent=True`` (BatchBALD, common random numbers): MC sample ``t`` of the ``k``-th
    dropkit dropout module (``named_modules()`` order) uses the mask seed
    :func:`dropkit.mc.sample_seed` ``(seed, k, t)`` (``seed`` None means 0) and one mask for
    every input of the batch, so every input, batch, call and strategy sees the same T masks
    (loop, batched and prefix agree to rounding, whatever the chunking). A module called c
    times in one forward uses stream positions from ``c * 2^40``. Needs dropkit modules
    (``dropkit.convert(model)``).

    Args:
        model: a module returning logits ``(N, C, ...)`` (classification; classes in dim 1) or
            any tensor ``(N, ...)`` (regression).
        x: a batch ``(N, ...)``, or a DataLoader (any iterable) of ``x``, ``(x,)`` or ``(x, y)``
            batches; results are concatenated over batches and ``y`` is used as targets.
            Inputs are moved to the device of the model's first parameter.
        samples: T >= 1.
        task: ``"classification"`` (softmax per sample, probabilities averaged) or
            ``"regression"``.
        strategy: ``"auto"``, ``"loop"``, ``"batched"`` or ``"prefix"``.
        seed: int in [0, 2^63) for reproducible draws.
        consistent: the same T masks for every input and call.
        chunk_size: copies per forward for batched/prefix (None: chosen by ``memory_budget``).
        memory_budget: bytes that the activations of one replicated forward may take, used
            when ``chunk_size`` is None: one probing forward of a single copy of the batch (for
            prefix, of the suffix) measures a copy's cost (:mod:`dropkit.mc.budget`: the CUDA
            peak of allocated memory, which resets the device's peak statistic; off CUDA the
            bytes of the tensors entering and leaving every module), and each forward runs
            ``memory_budget // cost`` copies (1 to T; logged at debug level as
            ``chunk_size=k``). None: a quarter of the free CUDA memory, or 1 GiB off CUDA.
            The chunking never changes the samples with ``consistent=True`` beyond rounding;
            without it, seeded draws depend on the chunks, so pass ``chunk_size`` to
            reproduce them across machines with different free memory.
        tau: regression precision; adds ``1/tau`` to the variance and enables the likelihood.
        targets: ``(N, ...)`` regression targets or class indices, for ``log_likelihood``.
        progress: a tqdm bar over the batches, when tqdm is installed.
        functional: which non-dropout modules also sample (:func:`dropkit.mc.enable`).

    Returns:
        :class:`dropkit.mc.MCResult` with ``samples`` ``(T, N, ...)`` and the summaries.

    Example:
        >>> import torch
        >>> from dropkit import nn as dkn
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), dkn.Dropout(0.5),
        ...                             torch.nn.Linear(8, 3))
        >>> result = predict(model, torch.randn(5, 4), samples=20, seed=0)
        >>> result.samples.shape, result.mean.shape, result.strategy
        (torch.Size([20, 5, 3]), torch.Size([5, 3]), 'prefix')
        >>> bool((result.mutual_information >= 0).all())
        True
    """
    _check_args(samples, task, strategy, seed, chunk_size, memory_budget, tau)
    samples = int(samples)
    if consistent and samples > MAX_SAMPLES:
        raise ValueError(f"samples must be <= 2^20 with consistent=True, got {samples}")
    device = _device(model)
    total = len(x) if not isinstance(x, torch.Tensor) and hasattr(x, "__len__") else None
    outs, ys, used = [], [], []
    with mc_mode(model, functional=functional) as handle:
        names, strategy = _plan_modules(model, handle, consistent, strategy)
        sampled_names = handle.dropout + handle.functional
        sampled = [model.get_submodule(n) for n in sampled_names]
        # computed at most once, shared by the plan and the chunk caches
        signature = functools.cache(lambda: model_signature(model, sampled_names))
        base = 0 if seed is None or not consistent else int(seed)
        sampler = Sampler(model, names, consistent=consistent, seed=base)
        chunking = _Chunking(
            model, samples, chunk_size, memory_budget, device,
            sampled=sampled, consistent=consistent, signature=signature,
        )  # fmt: skip
        plan: PrefixPlan | None = None
        try:
            with _seeded(None if consistent else seed, device), sampler, torch.no_grad():
                for xb, yb in _progress(_batches(x, targets), progress, total):
                    xb = xb if device is None else xb.to(device)
                    run = strategy
                    if run == "prefix" and not outs:  # plan once, on the first batch
                        try:
                            plan = plan_for(
                                model, sampled_names, sampled, xb, signature=signature()
                            )
                        except NoPrefixError as why:
                            logger.debug("dropkit.mc: prefix unavailable, using batched: %s", why)
                    if run == "prefix" and plan is None:
                        run = "batched"
                    try:
                        out = _run(model, xb, samples, chunking, run, plan, sampler)
                    except NoPrefixError as why:
                        logger.debug("dropkit.mc: prefix failed on a batch, using batched: %s", why)
                        run = "batched"
                        out = _run(model, xb, samples, chunking, run, plan, sampler)
                    outs.append(out)
                    ys.append(yb)
                    used += [run] if run not in used else []
        finally:
            if plan is not None:  # the cached plan must not hold this call's first batch
                plan.first = None
    if not outs:
        raise ValueError("x is an empty DataLoader: no batch to predict")
    y = _targets(ys, outs[0].device)
    if y is not None and targets is None and task == "regression" and tau is None:
        y = None  # (x, y) batches without tau: no likelihood
    return summarize(torch.cat(outs, 1), task, "+".join(used), tau=tau, targets=y)


def _plan_modules(model: nn.Module, handle, consistent: bool, strategy: str) -> tuple:
    """The dropout modules to wrap, and the strategy ``"auto"`` resolves to."""
    names = list(handle.dropout)
    if consistent:
        if handle.functional:
            raise ValueError(
                "consistent=True cannot control dropout called inside forward of "
                f"{list(handle.functional)}; use dropkit.nn modules there, or functional=False"
            )
        for name in names:
            m = model.get_submodule(name)
            if not consistent_supported(m) and drop_rate(m) != 0.0:
                raise ValueError(unsupported_message(m, name))
        names = [n for n in names if is_dropkit_dropout(model.get_submodule(n))]
    fixed = [n for n in names if not splittable(model.get_submodule(n))]
    if fixed and strategy in ("batched", "prefix"):
        raise ValueError(
            f"strategy={strategy!r} cannot replicate the batch for {fixed}: their input has no "
            "batch dim; use strategy='loop' or 'auto'"
        )
    if strategy == "auto":
        strategy = "loop" if fixed else "prefix"
    return names, strategy


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device | None) -> Iterator[None]:
    """Seed torch's generators inside ``fork_rng`` (the caller's state is restored after)."""
    if seed is None:
        yield
        return
    cuda = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(seed))
        yield


def _targets(ys: list, device: torch.device) -> torch.Tensor | None:
    given = [y for y in ys if y is not None]
    if given and len(given) != len(ys):
        raise ValueError("some batches have targets and some do not")
    return torch.cat(given).to(device) if given else None
