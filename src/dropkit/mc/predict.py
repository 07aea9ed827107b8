"""``predict``: T Monte Carlo dropout samples of a model, by loop, replicated batch or prefix."""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from dropkit.rng.backend import SEED_BOUND

from .modes import drop_rate, is_dropkit_dropout, mc_mode
from .prefix import NoPrefixError, PrefixPlan, build_plan, replicate
from .result import TASKS, MCResult, summarize
from .sampling import MAX_SAMPLES, Sampler, consistent_supported, splittable, unsupported_message

logger = logging.getLogger(__name__)

STRATEGIES = ("auto", "loop", "batched", "prefix")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_args(samples, task, strategy, seed, chunk_size, tau) -> None:
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


def _chunks(samples: int, chunk_size: int | None) -> list[range]:
    size = samples if chunk_size is None else min(chunk_size, samples)
    return [range(t, min(t + size, samples)) for t in range(0, samples, size)]


def _run(model, x, samples, chunk_size, strategy, plan: PrefixPlan | None, sampler) -> torch.Tensor:
    n = x.shape[0]
    if strategy == "loop":
        outs = []
        for t in range(samples):
            sampler.begin([t])
            outs.append(_check_output(model(x.clone()), n))  # clone: in-place layers on x
        return torch.stack(outs)
    values = plan.run_prefix(x) if strategy == "prefix" else None
    outs = []
    for ts in _chunks(samples, chunk_size):
        k = len(ts)
        sampler.begin(ts)
        out = plan.run_suffix(values, k) if strategy == "prefix" else model(replicate(x, k))
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
    tau: float | None = None,
    targets: torch.Tensor | None = None,
    progress: bool = False,
    functional: bool | str = "auto",
) -> MCResult:
    r"""Monte Carlo dropout (Gal & Ghahramani 2016): ``samples`` stochastic passes, summarised.

    The model runs in MC mode (:func:`dropkit.mc.mc_mode`): only dropout samples, BatchNorm and
    the rest stay in eval, under ``torch.no_grad()``; every ``training`` flag is restored after.

    Strategies (``chunk_size``: at most that many copies of the batch in one forward):

    * ``"loop"``: T forwards of the batch.
    * ``"batched"``: the batch replicated T times along dim 0, sample-major.
    * ``"prefix"``: the deterministic part upstream of the dropout runs once per batch (traced
      with ``torch.fx``, see :mod:`dropkit.mc.prefix`), only the rest sees the replicated
      batch; falls back to ``"batched"`` (logged at debug level) when the model cannot be
      traced or has no deterministic prefix.
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
    (loop, batched and prefix agree to rounding). A module called c times in one forward uses
    stream positions from ``c * 2^40``. Needs dropkit modules (``dropkit.convert(model)``).

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
        chunk_size: copies per forward for batched/prefix (None: all T).
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
    _check_args(samples, task, strategy, seed, chunk_size, tau)
    samples = int(samples)
    if consistent and samples > MAX_SAMPLES:
        raise ValueError(f"samples must be <= 2^20 with consistent=True, got {samples}")
    device = _device(model)
    total = len(x) if not isinstance(x, torch.Tensor) and hasattr(x, "__len__") else None
    outs, ys, used = [], [], []
    with mc_mode(model, functional=functional) as handle:
        names, strategy = _plan_modules(model, handle, consistent, strategy)
        sampled = [model.get_submodule(n) for n in handle.dropout + handle.functional]
        base = 0 if seed is None or not consistent else int(seed)
        sampler = Sampler(model, names, consistent=consistent, seed=base)
        with _seeded(None if consistent else seed, device), sampler, torch.no_grad():
            plan: PrefixPlan | None = None
            for xb, yb in _progress(_batches(x, targets), progress, total):
                xb = xb if device is None else xb.to(device)
                run = strategy
                if run == "prefix" and not outs:  # plan once, on the first batch
                    try:
                        plan = build_plan(model, sampled, xb)
                    except NoPrefixError as why:
                        logger.debug("dropkit.mc: prefix unavailable, using batched: %s", why)
                if run == "prefix" and plan is None:
                    run = "batched"
                try:
                    out = _run(model, xb, samples, chunk_size, run, plan, sampler)
                except NoPrefixError as why:
                    logger.debug("dropkit.mc: prefix failed on this batch, using batched: %s", why)
                    run = "batched"
                    out = _run(model, xb, samples, chunk_size, run, plan, sampler)
                outs.append(out)
                ys.append(yb)
                used += [run] if run not in used else []
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
