"""How many copies of a batch one forward may hold: the chunking of the batched and prefix
strategies of :func:`dropkit.mc.predict` to a memory budget.

Replicating a batch ``k`` times multiplies the activation memory of a forward by about ``k``
(the weights are shared and already allocated). The cost of one copy is measured by one
probing forward of a single copy:

* on CUDA, the rise of ``torch.cuda.max_memory_allocated`` over the memory allocated before
  the probe, less what stays allocated after it (a cuBLAS workspace made on first use is no
  cost per copy); the peak statistic is reset first, so the caller's own peak reading is lost;
* elsewhere, the bytes of every distinct tensor that enters or leaves a module of the probe
  (forward hooks, views of one storage counted once, parameters and buffers not at all), plus
  the returned output: more than the activations alive at any one time, so an upper bound.

The copies per forward are then ``budget // cost``, between 1 and T.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

#: The budget in bytes when none is given and the model is not on CUDA: 1 GiB.
CPU_BUDGET = 2**30
#: The share of the free CUDA memory taken as the budget when none is given.
CUDA_FRACTION = 0.25


def _device(device: torch.device | str | None) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


def default_budget(device: torch.device | str | None = None) -> int:
    """The default memory budget in bytes for a model on ``device``.

    CUDA: :data:`CUDA_FRACTION` of the memory new tensors can get, i.e. the driver's free
    memory (``torch.cuda.mem_get_info``) plus what PyTorch's caching allocator has reserved but
    not handed out; a quarter leaves room for the rest of the program and for fragmentation.
    Other devices: :data:`CPU_BUDGET` (1 GiB), fixed because host memory has no portable
    "free" reading; small next to a machine that runs models, so replication stays clear of
    swapping, and large enough that small models run all T copies at once.
    """
    device = _device(device)
    if device.type != "cuda":
        return CPU_BUDGET
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return max(1, int((free + cached) * CUDA_FRACTION))


def _tensors(value: object) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _storage(t: torch.Tensor) -> tuple[int, int]:
    """(key, bytes) of the memory behind ``t``: views of one storage share the key."""
    try:
        storage = t.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError):  # sparse and other storage-less layouts
        return id(t), t.numel() * t.element_size()


class _Tally:
    """Bytes of the distinct tensors seen by the hooks (kept alive while counting, so a freed
    storage's address cannot come back as a new tensor's and be skipped)."""

    def __init__(self, exclude: set[int]) -> None:
        self.seen = set(exclude)
        self.kept: list[torch.Tensor] = []
        self.bytes = 0

    def add(self, value: object) -> None:
        for t in _tensors(value):
            key, size = _storage(t)
            if key not in self.seen:
                self.seen.add(key)
                self.kept.append(t)
                self.bytes += size

    def hook(self, module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        self.add(args)
        self.add(kwargs)
        self.add(output)


def probe_bytes(
    forward: Callable[[], object],
    modules: Iterable[nn.Module] = (),
    device: torch.device | str | None = None,
) -> int:
    """The activation memory in bytes of one call of ``forward`` (run under ``no_grad``).

    ``forward`` runs one copy of the batch, including making that copy, as the replicated
    forward does. ``modules`` are hooked off CUDA (pass the model's modules and the root that
    ``forward`` calls); ``device`` is where the model lives (None: CPU). See the module notes
    for what is measured.
    """
    device = _device(device)
    if device.type == "cuda":
        with torch.no_grad():
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            out = forward()
            peak = torch.cuda.max_memory_allocated(device)
        del out
        kept = torch.cuda.memory_allocated(device)
        return max(0, peak - max(before, kept))
    modules = list(dict.fromkeys(modules))  # a module listed twice would count nothing new
    weights = {_storage(t)[0] for m in modules for t in [*m.parameters(), *m.buffers()]}
    tally = _Tally(weights)
    handles = [m.register_forward_hook(tally.hook, with_kwargs=True) for m in modules]
    try:
        with torch.no_grad():
            tally.add(forward())
    finally:
        for handle in handles:
            handle.remove()
    return tally.bytes


def copies_for(cost: float, samples: int, budget: int) -> int:
    """``budget // cost`` copies of ``cost`` bytes each, at least 1 and at most ``samples``."""
    if cost <= 0:
        return samples
    return max(1, min(samples, int(budget // cost)))


def copies_within_budget(
    forward: Callable[[], object],
    samples: int,
    budget: int | None = None,
    *,
    modules: Iterable[nn.Module] = (),
    device: torch.device | str | None = None,
) -> int:
    """How many copies of a batch one forward can hold within ``budget`` bytes (1 to T).

    Args:
        forward: runs ONE copy of the batch (for :func:`dropkit.mc.predict`: the model, or the
            suffix of the prefix strategy, in MC mode); called once, its output is dropped.
        samples: T, the most copies wanted.
        budget: bytes for the activations of one replicated forward; None:
            :func:`default_budget` of ``device``.
        modules: the modules ``forward`` runs, hooked to measure off CUDA (see
            :func:`probe_bytes`).
        device: where the model lives (None: CPU).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 256), torch.nn.ReLU())
        >>> x = torch.randn(8, 4)
        >>> per_copy = probe_bytes(lambda: model(x), model.modules())  # x, hidden, ReLU out
        >>> per_copy == (8 * 4 + 2 * 8 * 256) * 4
        True
        >>> copies_within_budget(lambda: model(x), 50, 10 * per_copy, modules=model.modules())
        10
    """
    budget = default_budget(device) if budget is None else budget
    return copies_for(probe_bytes(forward, modules, device), samples, budget)
