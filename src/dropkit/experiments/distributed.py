"""Recipes on several processes (``torchrun ... -m dropkit run``): DDP in data-parallel mode.

Under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set) the CLI joins the process group
(gloo on the CPU, NCCL with ``--device cuda``) and :func:`dropkit.experiments.trainer.fit`
trains through :class:`DataParallelFit`: each global batch of the recipe is split by rows over
the W ranks (``torch.tensor_split`` sizes, so an uneven last batch is handled), the model is
wrapped in ``DistributedDataParallel``, and the masks come from a
:class:`dropkit.rng.Stream` keyed by the trial seed and sharded by rows
(:mod:`dropkit.distributed`). Each rank's local mean loss is weighted by ``b_r W / B`` so DDP's
average is the global batch's mean gradient, and the recorded training loss is the global mean:
the records do not depend on W. Rank 0 alone writes the run folder (the other ranks write to a
private temporary folder, removed at the end; on resume it starts as a copy of the run).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dropkit.distributed import RowShard
from dropkit.rng.stream import Stream

#: Seconds a rank waits in a collective for the others before failing (env DROPKIT_DIST_TIMEOUT).
DEFAULT_TIMEOUT = 600


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` processes, ``local_rank`` on its node."""

    rank: int
    size: int
    local_rank: int


_world: World | None = None


def current() -> World | None:
    """The process group the CLI joined, or None (one process)."""
    return _world


def from_environment(device: str) -> World | None:
    """Join the ``torchrun`` process group when ``RANK`` and ``WORLD_SIZE`` are set."""
    global _world
    if _world is not None:
        return _world
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        timeout = int(os.environ.get("DROPKIT_DIST_TIMEOUT", DEFAULT_TIMEOUT))
        dist.init_process_group(
            "nccl" if device == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=timeout),
        )
    _world = World(rank, size, local_rank)
    return _world


def shutdown() -> None:
    """Leave the process group (after a barrier, so no rank exits while others still work)."""
    global _world
    if _world is not None and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _world = None


def is_collective_failure(error: BaseException) -> bool:
    """Whether ``error`` comes from a collective whose peer went away or timed out."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return any(k in text for k in ("gloo", "NCCL", "Connection closed", "Timed out", "timeout"))


def agree(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (e.g. a default run-folder name with a timestamp)."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def run_folder(out: Path | None, resume: bool) -> Iterator[Path | None]:
    """The folder this rank writes to: ``out`` on rank 0; elsewhere a private temporary folder
    (a copy of ``out`` when resuming, so the checkpoints can be read), removed at the end."""
    world = current()
    if world is None or world.rank == 0 or out is None:
        yield out
        return
    tmp = Path(tempfile.mkdtemp(prefix=f"dropkit-rank{world.rank}-"))
    try:
        private = tmp / out.name
        if resume and out.is_dir():
            shutil.copytree(out, private)
        yield private
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def split_rows(n: int, parts: int) -> list[int]:
    """Rows per rank of a batch of ``n`` (``torch.tensor_split``: the first ``n % parts`` ranks
    get one more)."""
    return [n // parts + (1 if r < n % parts else 0) for r in range(parts)]


class DataParallelFit:
    """What :func:`dropkit.experiments.trainer.fit` needs to train on the process group.

    ``ddp`` is the wrapped model, ``stream`` the row-sharded dropout stream (enter it around
    each forward), :meth:`local` this rank's rows of a global batch, :meth:`weight` the factor
    of the local loss, :meth:`global_mean` the global batch's mean loss.
    """

    def __init__(self, model: nn.Module, seed: int, device: torch.device) -> None:
        from torch.nn.parallel import DistributedDataParallel

        world = current()
        assert world is not None
        self.world = world
        ids = [device.index if device.index is not None else world.local_rank]
        self.ddp = DistributedDataParallel(model, device_ids=ids if device.type == "cuda" else None)
        self.stream = Stream(seed, model=model)
        self.shard = RowShard(world.rank, world.size)
        self.stream.shard = self.shard
        self.sizes: list[int] = []

    def local(self, batch: Any) -> Any:
        """This rank's rows of ``batch`` (a tensor or a tuple/list of tensors, rows in dim 0)."""
        tensors = batch if isinstance(batch, tuple | list) else (batch,)
        rows = int(tensors[0].shape[0])
        self.sizes = split_rows(rows, self.world.size)
        if rows < self.world.size:
            raise ValueError(
                f"a batch of {rows} rows cannot be split over {self.world.size} processes; "
                "use fewer processes or a larger batch (--set batch_size=...)"
            )
        self.shard.set_rows(self.sizes)
        start = sum(self.sizes[: self.world.rank])
        stop = start + self.sizes[self.world.rank]
        local = tuple(t[start:stop] for t in tensors)
        return type(batch)(local) if isinstance(batch, tuple | list) else local[0]

    def weight(self) -> float:
        """``b_r W / B``: DDP averages the ranks' gradients, this makes it the global mean's."""
        return self.sizes[self.world.rank] * self.world.size / sum(self.sizes)

    def global_mean(self, loss: torch.Tensor) -> torch.Tensor:
        """The mean loss over the global batch, from each rank's local mean (one all-reduce)."""
        total = loss.detach() * self.sizes[self.world.rank]
        dist.all_reduce(total)
        return total / sum(self.sizes)
