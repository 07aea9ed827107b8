"""When dropkit's CPU kernels run threaded, and with how many threads.

Every numba kernel in :mod:`dropkit.rng.cpu` has a serial twin built from the same body, and
:func:`launch` picks one per call. Masks are a pure function of (seed, offset, stream, element
index) and both twins walk the same blocks, so the choice never changes a result: same bits at
any size, thread count, threading layer, or in a forked child.

Design decisions (the why):

* **Threading layer: numba's own choice.** It is process-wide and shared with the user's numba
  code (``NUMBA_THREADING_LAYER``; tbb, then omp, then workqueue by default), so a library must
  not switch it. Instead the weak spot of each layer is handled here.
* **Fork.** numba's GNU-OpenMP pool kills a forked child at its first parallel region
  ("Terminating: fork() called from a process already using GNU OpenMP, this is unsafe"), which
  ended every ``DataLoader`` worker after the parent had run one dropout. A fork hook marks the
  child; if the parent had started that pool, the child runs the serial twins only (and the
  user can still get threads there with ``NUMBA_THREADING_LAYER=tbb`` or ``workqueue``, or the
  ``spawn``/``forkserver`` start methods). torch itself sets one thread in DataLoader workers,
  and a pool of forked workers already fills the cores, so little is lost.
* **Thread count follows torch.** A parallel call uses ``min(torch.get_num_threads(), numba's
  count for this thread)`` threads, read at each call (one C call, only on the parallel path),
  so ``torch.set_num_threads`` - and the 1 thread of DataLoader workers - governs dropkit too and
  the two pools do not oversubscribe the cores. numba's count is lowered for the one region and
  restored, leaving the user's numba setting as it was (it must be set from Python: calling
  ``numba.set_num_threads`` inside a kernel makes numba refuse to cache it).
* **One parallel kernel at a time.** The workqueue layer aborts the process when two parallel
  regions overlap, and on the other layers two overlapping teams oversubscribe the cores. The
  kernels release the GIL, so Python threads can call them at once: a non-blocking lock admits
  one parallel kernel; a thread that finds it taken runs the serial twin instead of waiting.
* **Serial up to** :data:`SERIAL_MAX` elements: a parallel launch costs tens of microseconds
  (milliseconds on a loaded machine, where a descheduled worker thread stalls the whole region
  for a scheduler tick), more than the whole serial kernel for small and medium tensors.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import numba
import torch

#: Largest element count run by the serial twin. On a quiet 2-core box the parallel twin
#: (2 threads) won from 2^14 elements, but by at most ~120 us up to 2^18 (serial: ~1 ns per
#: element), while on a loaded box one parallel region at 2^12..2^16 took 5-40 ms (a worker
#: waiting for a scheduler tick) against torch's own serial dropout at 0.07-1 ms. Serial up to
#: 2^18 keeps every size far below torch's time under contention (bench/cpu_dropout.py
#: --contention) for a small loss on idle machines.
SERIAL_MAX = 1 << 18

_get_torch_threads = torch.get_num_threads
_get_numba_threads = numba.get_num_threads
_set_numba_threads = numba.set_num_threads
_lock = threading.Lock()
_parallel_ok = True


def fork_unsafe_pool() -> bool:
    """Whether this process has started numba's GNU-OpenMP pool (a forked child must not use it).

    ``numba.threading_layer()`` raises until a pool has been started.
    """
    try:
        layer = numba.threading_layer()
    except ValueError:
        return False
    if layer != "omp":
        return False
    omppool = sys.modules.get("numba.np.ufunc.omppool")
    return getattr(omppool, "openmp_vendor", "GNU") == "GNU"


def _after_fork_in_child() -> None:
    global _lock, _parallel_ok
    # A lock held by a parent thread that is gone in the child would never be released.
    _lock = threading.Lock()
    if _parallel_ok and fork_unsafe_pool():
        _parallel_ok = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def parallel_allowed() -> bool:
    """False in a process forked after its parent started numba's GNU-OpenMP pool."""
    return _parallel_ok


def launch(parallel: Callable[..., Any], serial: Callable[..., Any], *args: Any) -> None:
    """Run ``parallel(*args)`` where it pays and is safe, else ``serial(*args)``.

    The caller has already sent sizes up to :data:`SERIAL_MAX` to ``serial``. numba's thread
    count is per thread; it is lowered to torch's for this one region and then restored.
    """
    if _parallel_ok and _get_torch_threads() > 1 and _lock.acquire(blocking=False):
        try:
            saved = _get_numba_threads()
            threads = min(_get_torch_threads(), saved)
            if threads == saved:
                parallel(*args)
            elif threads > 1:
                _set_numba_threads(threads)
                try:
                    parallel(*args)
                finally:
                    _set_numba_threads(saved)
            else:  # the user limited numba to one thread
                serial(*args)
        finally:
            _lock.release()
    else:
        serial(*args)
