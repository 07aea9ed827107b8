"""How many copies of the batch each replicated forward of :func:`dropkit.mc.predict` holds."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .budget import copies_for, default_budget, probe_bytes
from .io import Batch
from .modes import drop_rate

logger = logging.getLogger(__name__)


# model -> (its signature and device, {(strategy, input shape without N, dtype, rates, consistent):
# (bytes of one copy, its rows)}). A probe costs a forward of one copy, about as much as a whole
# predict of a small batch, so repeated calls reuse the costs; weak keys: a collected model leaves
# no entry.
_COSTS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict]] = weakref.WeakKeyDictionary()
_MAX_COSTS = 32  # input shapes kept per model (variable-length inputs would grow it forever)


class Chunking:
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

    def size(self, batch: Batch, strategy: str, forward: Callable, root, sampler) -> int:
        """Copies per forward for ``batch``; ``forward(k)`` runs ``k`` copies and ``root`` is
        the module it calls."""
        if self.chunk_size is not None:
            return min(self.chunk_size, self.samples)
        if self.samples == 1:
            return 1
        costs = self.costs()
        key = (strategy, batch.key(), *self._variant)
        if key not in costs:
            if len(costs) >= _MAX_COSTS:
                costs.clear()
            costs[key] = (self._probe(forward, root, sampler), batch.n)
        if self.budget is None:  # read once: the free CUDA memory moves as chunks run
            self.budget = default_budget(self.device)
        cost, rows = costs[key]
        size = copies_for(cost * max(1.0, batch.n / max(rows, 1)), self.samples, self.budget)
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
