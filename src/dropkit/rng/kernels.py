"""Lazy access to the compiled kernels, so that importing dropkit does not import numba/triton.

``numba`` costs ~0.3 s to import and building its CPU target when the first cached kernel loads
another ~0.3 s; ``triton`` more. They load on the first call that needs them. Availability is
answered without importing (``importlib.util.find_spec``).

**Background load of the CPU kernels.** The first time :func:`cpu_kernels` is called, a
(non-daemon) thread imports :mod:`dropkit.rng.cpu` and loads its cached small-call kernels, so
that numba's import, its target initialisation and the cache loads happen off the caller's
path. The thread never compiles: numba's compiler swaps the process-wide warning filters
thousands of times per kernel (``warnings.catch_warnings``), which would undo the filters the
caller's thread sets meanwhile; an uncached kernel (a fresh install) compiles on its first call,
in the caller. Until that thread has finished, :func:`cpu_kernels` returns a dispatcher with the
same ten kernel functions: calls on arrays of at most :data:`NUMPY_MAX` elements run the NumPy
twins of :mod:`dropkit.rng.cpu_numpy` (the same bits; only the NaN that an add of two NaNs
returns is left open, as by IEEE), larger calls wait for the load and run numba. Once loaded,
:func:`cpu_kernels` returns the numba module itself (one global check per call).

* **Fork:** a fork hook joins a running loader first, so a child never inherits a half-done
  import (``multiprocessing``'s fork start, DataLoader workers).
* **Failure:** if the load fails (numba broken), the next call after the loader has finished
  raises the loader's exception, the one a synchronous import gives; later calls retry the
  import synchronously. Nothing falls back silently.
* ``DROPKIT_EAGER_KERNELS=1`` in the environment (read at the first call) loads synchronously
  in the caller, as before; so does a process that has already imported :mod:`dropkit.rng.cpu`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from functools import cache
from types import ModuleType
from typing import Any

# Answered once at import (a find_spec is ~50 us); plain globals, so torch.compile traces them.
_NUMBA = importlib.util.find_spec("numba") is not None
_TRITON = importlib.util.find_spec("triton") is not None

#: Largest array (elements) that the NumPy twins answer while numba loads (~0.15 ms at 2^10
#: elements, ~10 ms at 2^16); a larger call waits for numba.
NUMPY_MAX = 1 << 16

_cpu: ModuleType | None = None  # dropkit.rng.cpu once loaded and warmed
_loader: threading.Thread | None = None
_error: BaseException | None = None  # the loader's failure, not yet reported
_state_lock = threading.Lock()


def numba_available() -> bool:
    """Whether numba is installed (without importing it)."""
    return _NUMBA


def triton_available() -> bool:
    """Whether triton is installed (without importing it)."""
    return _TRITON


def cpu_kernels() -> Any:
    """:mod:`dropkit.rng.cpu` (numba) once loaded; while it loads in the background, a
    dispatcher with the same ten kernels (NumPy twins for small arrays, see the module doc)."""
    kernels = _cpu
    if kernels is not None:
        return kernels
    return _cpu_kernels_slow()


def loaded_cpu() -> ModuleType | None:
    """:mod:`dropkit.rng.cpu` if it has finished loading, else None (never waits, never starts
    a load): for callers that use the numba module's own entry points when they can."""
    return _cpu


def _cpu_kernels_slow() -> Any:
    global _loader
    with _state_lock:
        if _cpu is not None:
            return _cpu
        if _loader is None:
            eager = os.environ.get("DROPKIT_EAGER_KERNELS") == "1"
            # Imported already (or being imported by another thread: the import below waits
            # for it): nothing left to hide.
            if not eager and __package__ + ".cpu" not in sys.modules:
                from . import cpu_numpy  # noqa: F401  (before the loader holds import locks)

                _loader = threading.Thread(target=_load, name="dropkit-numba-load")
                _loader.start()
                return _LOADING
        elif _loader.is_alive():
            return _LOADING
    return _wait()


def _load() -> None:
    """Import :mod:`dropkit.rng.cpu` and load its small-call kernels from numba's cache
    (:func:`dropkit.rng.cpu.warm_from_cache`; the first also builds numba's CPU target). A
    kernel that is not cached is left to compile on its first call, in the caller's thread."""
    global _cpu, _error
    try:
        from . import cpu

        if cpu.AVAILABLE:
            cpu.warm_from_cache()
        _cpu = cpu
    except BaseException as exc:  # reported to the next caller, see _wait
        _error = exc


def _wait() -> ModuleType:
    """Wait for the loader (if any) and return the numba module, or raise what the load raised.

    After a failure has been reported once, each call retries the synchronous import (as the
    uncached failure of a plain import would)."""
    global _cpu, _error
    loader = _loader
    if loader is not None and loader is not threading.current_thread():
        loader.join()
    if _cpu is not None:
        return _cpu
    with _state_lock:
        error, _error = _error, None
    if error is not None:
        raise error
    from . import cpu

    _cpu = cpu
    return cpu


def _pick(n: int) -> Any:
    kernels = _cpu
    if kernels is not None:
        return kernels
    if n <= NUMPY_MAX and _loader is not None and _loader.is_alive():
        from . import cpu_numpy

        return cpu_numpy
    return _wait()


class _LoadingKernels:
    """The ten kernels of :mod:`dropkit.rng.cpu` while it loads: each call goes to numba if it
    has loaded meanwhile, to the NumPy twin (:mod:`dropkit.rng.cpu_numpy`) for at most
    :data:`NUMPY_MAX` elements, else waits for numba. Same signatures, same bits."""

    __slots__ = ()

    def masked_scale_kernel(self, x, out, seed, offset, stream, threshold, scale):
        """See :func:`dropkit.rng.cpu.masked_scale_kernel`."""
        _pick(x.size).masked_scale_kernel(x, out, seed, offset, stream, threshold, scale)

    def masked_scale_half_kernel(self, x, out, seed, offset, stream, threshold, scale, is_bf16):
        """See :func:`dropkit.rng.cpu.masked_scale_half_kernel`."""
        _pick(x.size).masked_scale_half_kernel(
            x, out, seed, offset, stream, threshold, scale, is_bf16
        )

    def alpha_affine_kernel(self, x, out, seed, offset, stream, threshold, fill, a, b):
        """See :func:`dropkit.rng.cpu.alpha_affine_kernel`."""
        _pick(x.size).alpha_affine_kernel(x, out, seed, offset, stream, threshold, fill, a, b)

    def alpha_affine_half_kernel(
        self, x, out, seed, offset, stream, threshold, fill, a, b, is_bf16
    ):
        """See :func:`dropkit.rng.cpu.alpha_affine_half_kernel`."""
        _pick(x.size).alpha_affine_half_kernel(
            x, out, seed, offset, stream, threshold, fill, a, b, is_bf16
        )

    def scaled_keep_kernel(self, out, seed, offset, stream, threshold, value):
        """See :func:`dropkit.rng.cpu.scaled_keep_kernel`."""
        _pick(out.size).scaled_keep_kernel(out, seed, offset, stream, threshold, value)

    def words_kernel(self, out, seed, offset, stream):
        """See :func:`dropkit.rng.cpu.words_kernel`."""
        _pick(out.size).words_kernel(out, seed, offset, stream)

    def bias_dropout_add_kernel(
        self, x, bias, residual, out, seed, offset, stream, threshold, scale
    ):
        """See :func:`dropkit.rng.cpu.bias_dropout_add_kernel`."""
        _pick(x.size).bias_dropout_add_kernel(
            x, bias, residual, out, seed, offset, stream, threshold, scale
        )

    def gaussian_kernel(self, x, out, seed, offset, stream, sigma):
        """See :func:`dropkit.rng.cpu.gaussian_kernel`."""
        _pick(out.size).gaussian_kernel(x, out, seed, offset, stream, sigma)

    def gaussian_half_kernel(self, x, out, seed, offset, stream, sigma, is_bf16):
        """See :func:`dropkit.rng.cpu.gaussian_half_kernel`."""
        _pick(out.size).gaussian_half_kernel(x, out, seed, offset, stream, sigma, is_bf16)

    def normal_kernel(self, out, seed, offset, stream):
        """See :func:`dropkit.rng.cpu.normal_kernel`."""
        _pick(out.size).normal_kernel(out, seed, offset, stream)


_LOADING = _LoadingKernels()


def _join_loader_before_fork() -> None:
    # A child forked mid-import would inherit module locks held by a thread it does not have,
    # and half-initialised modules in sys.modules.
    loader = _loader
    if loader is not None and loader.is_alive() and loader is not threading.current_thread():
        loader.join()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_join_loader_before_fork)


@cache
def gpu_kernels() -> ModuleType:
    """:mod:`dropkit.rng.gpu`, imported (with triton) on first use."""
    from . import gpu

    return gpu
