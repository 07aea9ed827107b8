"""Helpers shared by the torch tests: serialisation round trips, optional peer imports and
process groups of spawned ranks."""

from __future__ import annotations

import copy
import io
import pickle
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch


def clones(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module`` after copy.deepcopy, pickle and torch.save/torch.load round trips."""
    yield copy.deepcopy(module)
    yield pickle.loads(pickle.dumps(module))
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    yield torch.load(buffer, weights_only=False)


def import_peer(name: str) -> ModuleType:
    """Import an optional peer library (timm, torchvision) or skip the test with the reason.

    A peer that is installed but cannot load here (e.g. a CUDA torchvision next to a CPU torch
    raises RuntimeError on import) is skipped too, rather than failing the suite.
    """
    try:
        return pytest.importorskip(name, reason=f"{name} is not installed (optional peer)")
    except ImportError as err:  # pragma: no cover - depends on the environment
        pytest.skip(f"{name} is installed but cannot be imported here: {err}")
    except Exception as err:  # pragma: no cover - broken binary extension
        pytest.skip(f"{name} is installed but cannot be imported here: {err}")


def rendezvous() -> str:
    """A ``file://`` init method for one process group: a path no other group uses, so two test
    runs on one machine cannot meet (TCP ports picked as "free" can race)."""
    return f"file://{Path(tempfile.mkdtemp(prefix='dropkit-pg-')) / 'store'}"


def spawn_ranks(fn, nprocs: int, args: tuple = (), timeout: float = 240.0) -> None:
    """``fn(rank, *args)`` on ``nprocs`` spawned processes; an error in a rank is raised here,
    and ranks still running after ``timeout`` seconds are killed and the test fails (a hang
    must end the test, never the whole run)."""
    import torch.multiprocessing as mp

    context = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{nprocs} ranks of {fn.__name__} did not finish within {timeout:.0f} s")
