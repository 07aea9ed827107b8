"""Helpers shared by the torch tests: serialisation round trips and optional peer imports."""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Iterator
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
