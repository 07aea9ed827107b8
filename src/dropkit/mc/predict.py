"""``predict``: T Monte Carlo dropout samples of a model, by loop, replicated batch or prefix."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import numbers
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from dropkit.rng.backend import SEED_BOUND

from . import layout
from .chunking import Chunking
from .fast import FastDropout
from .intercept import consistent_ops
from .io import UNSET, Batch, as_batch, pick_output, split_batch
from .modes import drop_rate, is_dropkit_dropout
from .ownership import sole_owner
from .plan import SamplingPlan, cached_plan
from .prefix import NoPrefixError, PrefixPlan, model_signature, plan_for
from .probe import no_fast_path
from .replicas import replicated
from .result import TASKS, MCResult, combine
from .sampling import MAX_SAMPLES, Sampler, consistent_supported, splittable, unsupported_message
from .summary import Accumulator

__all__ = ["STRATEGIES", "predict"]
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


def _chunks(samples: int, size: int) -> list[range]:
    return [range(t, min(t + size, samples)) for t in range(0, samples, size)]


def _run(
    model, batch: Batch, samples, chunking, strategy, plan, sampler, pick, sink, layouts
) -> None:
    """Run the model on ``batch``; each ``(k, N, ...)`` chunk of samples goes to ``sink``.
    ``layouts``: the sequence modules' batch sizes for one copy (:mod:`.layout`), checked on
    every replicated forward."""
    n = batch.n
    if strategy == "loop":
        for t in range(samples):
            sampler.begin([t])
            # clone: in-place layers on x; any output rows (the samples are not reshaped)
            sink(pick(batch.clone()(model), None)[None])
        return
    x = batch.single
    values = plan.run_prefix(x) if strategy == "prefix" else None

    def forward(k: int):
        checked = layout.check(model, layouts, k) if k > 1 and layouts else contextlib.nullcontext()
        with replicated(k, n), checked:
            if strategy == "prefix":
                return plan.run_suffix(values, k)
            return batch.replicate(k)(model)

    root = plan.suffix if strategy == "prefix" else model
    for ts in _chunks(samples, chunking.size(batch, strategy, forward, root, sampler)):
        k = len(ts)
        sampler.begin(ts)
        out = pick(forward(k), k * n)
        chunk = out.reshape(k, n, *out.shape[1:])
        del out  # so that a chunk nobody else holds can be proven so (and written in place)
        owned = sole_owner(chunk)  # on its own line: a call's pending arguments hold references
        sink(chunk, owned)


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
    class_dim: int | None = None,
    output: str | int | Callable | None = None,
    target: int | str | None = UNSET,  # type: ignore[assignment]
    keep_samples: bool = True,
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
    output. torch's sequence modules (``nn.RNN/LSTM/GRU``, ``nn.MultiheadAttention``, the
    transformer layers) are checked on every replicated forward (:mod:`dropkit.mc.layout`):
    when their batch does not grow with the copies (a sequence-first input, ``(L, N)``), the
    copies would run one after another, so batched and prefix raise naming the module and
    ``"auto"`` samples by loop (the reason in ``result.strategy``); so does an output without
    the replicated batch in dim 0. Loop takes any layout.
    Modules with one mask per forward for the whole batch (DropConnect, WeightDrop,
    ``DropPath(mode="batch")``, ...) run once per copy, so every strategy samples the same
    distribution. With ``seed`` the draws are reproducible (torch's generators are seeded
    inside ``torch.random.fork_rng``, so the caller's random state is untouched).

    ``consistent=True`` (BatchBALD, common random numbers): MC sample ``t`` of the ``k``-th
    dropkit dropout module (``named_modules()`` order) uses the mask seed
    :func:`dropkit.mc.sample_seed` ``(seed, k, t)`` (``seed`` None means 0) and one mask for
    every input of the batch, so every input, batch, call and strategy sees the same T masks
    (loop, batched and prefix agree to rounding, whatever the chunking). A module called c
    times in one forward uses stream positions from ``c * 2^40``. torch's own dropout
    (modules, ``F.dropout*``, SDPA, MHA, RNN) is answered with the same kind of masks
    (:mod:`dropkit.mc.intercept`), and so is the per-sample ``torch.rand((N, 1, ..., 1))`` of
    Hugging Face's stochastic depth; other random ops raise, naming the module and the op.

    Args:
        model: a module returning logits ``(N, C, ...)`` (classification; classes in dim 1) or
            any tensor ``(N, ...)`` (regression).
        x: a tensor ``(N, ...)``, a tuple of tensors (``model(*x)``), a dict /
            ``BatchEncoding`` of tensors (``model(**x)``), or a DataLoader (any other
            iterable, lists included) of these; every tensor with N rows in dim 0 is
            replicated together (:mod:`dropkit.mc.io`). Results are concatenated over
            batches. Inputs are moved to the device of the model's first parameter.
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
        class_dim: classification: the dim of the model output holding the classes. None:
            1 for ``(N, C)``, the last dim for a ``ModelOutput``'s ``logits``; any other
            output with more than 2 dims raises.
        output: which part of the model output to summarise: None (a tensor, a tuple's first
            element, a dict/``ModelOutput``'s ``logits``), a key/index, or a callable.
        target: for DataLoader batches, where the targets are: an index of a tuple batch or
            a key of a dict batch; None: every element is an input. Left out, a batch of
            several tensors or a dict with a label key raises (never guessed).
        keep_samples: False keeps only running statistics (``samples`` is None), so the
            memory is that of one chunk of samples, not of all T. True (default): when one
            chunk holds all T samples and nothing but ``predict`` holds the model's output
            (:func:`dropkit.mc.ownership.sole_owner`), the probabilities are written into
            that output, so no second ``(T, N, ...)`` tensor is made.

    Which ops are sampled is found by probing forwards on the first batch
    (:mod:`dropkit.mc.probe`, :mod:`dropkit.mc.plan`): every random aten op the forward issues
    and the module that issued it; those modules (dropout modules, attention modules that gate
    their rate on ``self.training``, ``nn.MultiheadAttention``, RNNs with ``dropout=``) run in
    train mode, everything else in eval; torch's MHA eval fast path is disabled while sampling.
    ``result.sampled`` lists ``(module, op)`` pairs.

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
    if task == "regression" and targets is not None and tau is None:
        raise ValueError("regression log-likelihood needs tau (the model precision)")
    device = _device(model)
    single = isinstance(x, torch.Tensor | tuple | Mapping)
    total = None if single or not hasattr(x, "__len__") else len(x)
    batches = _batches(x, targets, target)
    pick = _Picker(output)
    parts, ys, used, reason = [], [], [], ""
    flags = [(m, m.training) for m in model.modules()]
    plan: PrefixPlan | None = None
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_seeded(None if consistent else seed, device))
            stack.enter_context(torch.no_grad())
            stack.enter_context(no_fast_path())
            session = None
            for batch, yb in _progress(batches, progress, total):
                batch = batch.to(device)
                if session is None:  # plan once, on the first batch
                    session = _Session(model, batch, strategy, consistent, seed, stack)
                    chunking = Chunking(
                        model, samples, chunk_size, memory_budget, device,
                        sampled=session.sampled, consistent=consistent,
                        signature=session.signature,
                    )  # fmt: skip
                    if session.strategy == "prefix":
                        plan, reason = session.prefix_plan(batch)
                    if not consistent and (device is None or device.type == "cpu"):
                        stack.enter_context(FastDropout())  # after the probes: they see torch's
                run = session.strategy
                session.sampler.rows = batch.n
                if run == "prefix" and (plan is None or batch.single is None):
                    run = "batched"
                if yb is not None:
                    yb = yb.to(device) if device is not None else yb
                sink = _Sink(task, class_dim, keep_samples, tau, yb, pick, samples)
                args = (model, batch, samples, chunking)
                try:
                    try:
                        _run(*args, run, plan, session.sampler, pick, sink, session.layouts)
                    except NoPrefixError as why:
                        reason = f"prefix failed on a batch: {why}"
                        logger.info("dropkit.mc: %s; using batched", reason)
                        run = "batched"
                        _run(*args, run, plan, session.sampler, pick, sink, session.layouts)
                except layout.BatchLayoutError as why:
                    if strategy != "auto" or sink.acc is not None:
                        raise
                    reason = f"batch not in dim 0: {why}"
                    logger.info("dropkit.mc: %s; using loop", reason)
                    run = session.strategy = "loop"
                    _run(*args, run, plan, session.sampler, pick, sink, session.layouts)
                parts.append(sink.acc)
                ys.append(yb)
                used += [run] if run not in used else []
    finally:
        if plan is not None:  # the cached plan must not hold this call's first batch
            plan.first = None
        for module, flag in flags:
            module.training = flag
    if not parts:
        raise ValueError("x is an empty DataLoader: no batch to predict")
    y = _targets(ys, parts[0].mean.device)
    if y is not None and task == "regression" and tau is None:
        y = None  # (x, y) batches without tau: no likelihood
    name = "+".join(used) + (f" ({reason})" if reason and "prefix" not in used else "")
    return combine(parts, task, name, tau=tau, targets=y, sampled=session.plan.sampled)


# rand: only a per-sample draw (stochastic depth), checked when it is answered (mc.intercept)
_CONTROLLED = ("aten.bernoulli_.float", "aten.native_dropout.default", "aten.rand.default")


def _check_consistent(model: nn.Module, calls) -> None:
    """Every sampled call must be one that consistent masks control, else raise naming it."""
    for call in calls:
        module = model.get_submodule(call.module)
        if is_dropkit_dropout(module):
            if not consistent_supported(module) and drop_rate(module) != 0.0:
                raise ValueError(unsupported_message(module, call.module))
        elif not (call.op in _CONTROLLED or call.op.startswith("module:")
                  or "scaled_dot_product" in call.op):  # fmt: skip
            raise ValueError(
                f"consistent=True cannot control {call.op} issued by module "
                f"{call.module or '<root>'!r} ({type(module).__name__}): only dropout-style "
                "Bernoulli masks can be shared across inputs; use consistent=False"
            )


#: Plans whose batch was checked to be in dim 0 (:func:`_check_batch_in_dim_0`), by identity
#: (equal plans of two models are not the same check): a plan is made for one model state,
#: input structure and batch size, so the check holds while the plan is reused.
_BATCH_IN_DIM_0: weakref.WeakValueDictionary[int, SamplingPlan] = weakref.WeakValueDictionary()


def _check_batch_in_dim_0(model: nn.Module, batch: Batch, plan: SamplingPlan) -> None:
    """consistent=True shares each mask along dim 0 of the model input, whatever the strategy:
    one forward on two copies checks that torch's sequence modules see dim 0 as their batch
    (:mod:`.layout`), else sharing would follow time steps, not inputs. Once per plan."""
    if _BATCH_IN_DIM_0.get(id(plan)) is plan:
        return
    cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=cuda), layout.check(model, dict(plan.layouts), 2):
            batch.replicate(2)(model)
    except layout.BatchLayoutError as why:
        raise layout.BatchLayoutError(
            f"consistent=True shares masks across the inputs in dim 0 of the model input: {why}"
        ) from None
    _BATCH_IN_DIM_0[id(plan)] = plan


class _Session:
    """The MC plan of one ``predict`` call, made on its first batch: the probe
    (:func:`dropkit.mc.plan.cached_plan`), the flags, the strategy, the samplers."""

    def __init__(self, model, batch: Batch, strategy, consistent, seed, stack) -> None:
        self.model = model
        # the sequence modules' batch sizes (checked on replicated batches) depend on N
        rows = batch.n if layout.has_layout_modules(model) else None
        self.plan = cached_plan(model, lambda: batch.clone()(model), batch.structure(), rows)
        self.layouts = dict(self.plan.layouts)
        model.eval()
        for name in self.plan.train:
            model.get_submodule(name).training = True
        logger.debug("dropkit.mc: sampling %s", self.plan.sampled)
        names = [n for n in self.plan.train if is_dropkit_dropout(model.get_submodule(n))]
        if consistent:
            _check_consistent(model, self.plan.calls)
            if self.layouts:
                _check_batch_in_dim_0(model, batch, self.plan)
        fixed = [n for n in names if not splittable(model.get_submodule(n))]
        if fixed and strategy in ("batched", "prefix"):
            raise ValueError(
                f"strategy={strategy!r} cannot replicate the batch for {fixed}: their input has "
                "no batch dim; use strategy='loop' or 'auto'"
            )
        self.strategy = ("loop" if fixed else "prefix") if strategy == "auto" else strategy
        self.sampled = [model.get_submodule(n) for n in self.plan.train]
        self.stochastic = sorted(self.plan.stochastic)
        self.signature = functools.cache(lambda: model_signature(model, self.stochastic))
        base = 0 if seed is None or not consistent else int(seed)
        self.sampler = stack.enter_context(Sampler(model, names, consistent=consistent, seed=base))
        if consistent:
            stack.enter_context(consistent_ops(model, self.sampler, batch.n))

    def prefix_plan(self, batch: Batch) -> tuple[PrefixPlan | None, str]:
        """The prefix plan, or None and why there is none (logged at INFO)."""
        x = batch.single
        try:
            if x is None:
                raise NoPrefixError("the model is called with several inputs or keywords")
            stochastic = [self.model.get_submodule(n) for n in self.stochastic]
            plan = plan_for(
                self.model, self.stochastic, self.sampled, x, signature=self.signature(),
                stochastic=stochastic,
            )  # fmt: skip
        except NoPrefixError as why:
            logger.info("dropkit.mc: prefix unavailable (%s); using batched", why)
            return None, f"prefix unavailable: {why}"
        return plan, ""


class _Sink:
    """Feeds one batch's chunks of samples to an :class:`Accumulator`, made on the first chunk
    (the class dim is known once an output has been seen)."""

    def __init__(self, task, class_dim, keep, tau, targets, picker, total) -> None:
        self.args = (task, class_dim, keep, tau, targets)
        self.picker = picker
        self.total = total
        self.acc: Accumulator | None = None

    def __call__(self, chunk: torch.Tensor, owned: bool = False) -> None:
        if self.acc is None:
            task, class_dim, keep, tau, targets = self.args
            dim = (
                _class_dim(class_dim, chunk.dim() - 1, self.picker.hf)
                if task != "regression"
                else 0
            )
            if task == "regression" and targets is not None:
                _check_shape(targets, chunk.shape[1:])
            targets = targets if task == "regression" else None
            self.acc = Accumulator(task, dim, keep, tau, targets, total=self.total)
        self.acc.add(chunk, owned)


def _check_shape(targets: torch.Tensor, shape) -> None:
    if tuple(targets.shape) != tuple(shape):
        raise ValueError(
            f"targets must have shape {tuple(shape)} (the model output without T), "
            f"got {tuple(targets.shape)}"
        )


def _class_dim(class_dim: int | None, ndim: int, hf: bool) -> int:
    """The class dim of a model output with ``ndim`` dims (batch first)."""
    if class_dim is None:
        if hf:
            return ndim - 1  # Hugging Face logits: classes (vocabulary) last
        if ndim == 2:
            return 1
        raise ValueError(
            f"the model output has {ndim} dims (N, ...): pass class_dim= (the dim of the "
            "classes, e.g. class_dim=-1 for (N, L, V) token logits, 1 for (N, C, H, W) "
            "segmentation) or task='regression'"
        )
    if not isinstance(class_dim, int) or isinstance(class_dim, bool) or ndim < 2:
        raise ValueError(f"class_dim must be an int in [1, {ndim}) or -1..-{ndim - 1}")
    dim = class_dim % ndim if -ndim <= class_dim < ndim else -1
    if dim < 1:
        raise ValueError(
            f"class_dim must name a dim of the output other than the batch dim 0: an int in "
            f"[1, {ndim}) or [-{ndim - 1}, -1], got {class_dim!r}"
        )
    return dim


class _Picker:
    """The tensor to summarise from each output; remembers whether it was HF ``logits``."""

    def __init__(self, output) -> None:
        self.output = output
        self.hf = False

    def __call__(self, out: object, rows: int | None) -> torch.Tensor:
        """The output to summarise; ``rows``: the batch it must keep in dim 0 (None: any)."""
        out, self.hf = pick_output(out, self.output)
        if out.dim() == 0 and rows is None:
            out = out[None]  # a scalar per forward (loop): one "row"
        if rows is not None and (out.dim() == 0 or out.shape[0] != rows):
            # a BatchLayoutError (a ValueError): strategy="auto" falls back to loop on it
            raise layout.BatchLayoutError(
                f"the model output {tuple(out.shape)} does not keep the batch of {rows} rows in "
                "dim 0; batched and prefix strategies need it (use strategy='loop')"
            )
        return out


def _batches(x, targets, target) -> Iterator[tuple[Batch, torch.Tensor | None]]:
    if isinstance(x, torch.Tensor | tuple | Mapping):
        yield as_batch(x), targets
        return
    if targets is not None:
        raise ValueError(
            "targets must be None when x is a DataLoader; pass target= (where the batches hold "
            "the targets) instead"
        )
    for batch in x:
        yield split_batch(batch, target)


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
