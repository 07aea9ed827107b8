"""Lazy access to the compiled kernels, so that importing dropkit does not import numba/triton.

``numba`` costs ~0.25 s to import and ``triton`` more; they load on the first call that needs
them. Availability is answered without importing (``importlib.util.find_spec``).
"""

from __future__ import annotations

import importlib.util
from functools import cache
from types import ModuleType

# Answered once at import (a find_spec is ~50 us); plain globals, so torch.compile traces them.
_NUMBA = importlib.util.find_spec("numba") is not None
_TRITON = importlib.util.find_spec("triton") is not None


def numba_available() -> bool:
    """Whether numba is installed (without importing it)."""
    return _NUMBA


def triton_available() -> bool:
    """Whether triton is installed (without importing it)."""
    return _TRITON


@cache
def cpu_kernels() -> ModuleType:
    """:mod:`dropkit.rng.cpu`, imported (with numba) on first use."""
    from . import cpu

    return cpu


@cache
def gpu_kernels() -> ModuleType:
    """:mod:`dropkit.rng.gpu`, imported (with triton) on first use."""
    from . import gpu

    return gpu
