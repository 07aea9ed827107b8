"""``numba.njit`` with an on-disk kernel cache that never stops an import.

``numba.njit(cache=True)`` raises ``RuntimeError: cannot cache function ...: no locator
available`` at *decoration* time (so at ``import``) when none of numba's cache folders is
writable: ``NUMBA_CACHE_DIR``, the package's ``__pycache__`` and the user-wide cache under
``$HOME``. That is the normal state of read-only containers, serverless images and system-wide
installs run by a user without a writable home.

:func:`cached_njit` tries, in order:

1. numba's own locators (exactly what ``cache=True`` does, including ``NUMBA_CACHE_DIR`` and
   ``NUMBA_CACHE_LOCATOR_CLASSES``);
2. a private folder ``<tempdir>/dropkit-numba-<uid>``, created mode 0700 and used only if it
   is a real directory owned by this user and not writable by others: numba's cache files are
   pickles, so a folder another user could write to would let them run code in this process;
3. no cache: the kernels compile in each process (seconds, once per process), and still work.

The fallback is logged at debug level on the ``dropkit.rng`` logger. Only dropkit's own kernels
are affected: numba's global configuration is restored right after the fallback is set up.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Callable
from functools import cache
from typing import Any

import numba

logger = logging.getLogger("dropkit.rng")


@cache
def private_cache_dir() -> str | None:
    """The per-user fallback cache folder, or None where it cannot be made safely."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    try:
        path = os.path.join(
            tempfile.gettempdir(), f"dropkit-numba-{uid if uid is not None else 'user'}"
        )
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:  # includes "no usable temporary directory"
        return None
    if not stat.S_ISDIR(st.st_mode) or not os.access(path, os.W_OK | os.X_OK):
        return None
    if uid is not None and (st.st_uid != uid or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
        return None  # someone else's folder (or a planted one): do not load pickles from it
    return path


def enable_cache(dispatcher: Any) -> str:
    """Give a numba dispatcher an on-disk cache; return where (``"numba"``, a folder, ``""``).

    ``dispatcher.enable_caching()`` is what ``njit(cache=True)`` calls; it raises RuntimeError
    when no locator can write.
    """
    try:
        dispatcher.enable_caching()
        return "numba"
    except RuntimeError:
        pass
    name = getattr(dispatcher.py_func, "__qualname__", "?")
    folder = private_cache_dir()
    if folder is not None:
        saved = numba.config.CACHE_DIR
        numba.config.CACHE_DIR = folder  # read by numba's locator only while it is created
        try:
            dispatcher.enable_caching()
            logger.debug("dropkit: numba cache of %s falls back to %s", name, folder)
            return folder
        except RuntimeError:
            pass
        finally:
            numba.config.CACHE_DIR = saved
    logger.debug("dropkit: no writable numba cache folder; %s compiles in each process", name)
    return ""


def call_if_cached(dispatcher: Any, *args: Any) -> bool:
    """Call ``dispatcher(*args)`` only if its compiled code for these argument types is already
    in memory or in its fresh on-disk cache (so the call loads code, never compiles); return
    whether it was called.

    For warm-up calls on a background thread: numba's compiler enters
    ``warnings.catch_warnings()`` thousands of times per kernel, and before Python 3.14 that
    context swaps the process-wide filter list, so a compile on another thread can undo the
    filters the main thread sets meanwhile (or leave its own behind). Loading cached code does
    not touch the filters. Anything this cannot read (a numba whose cache internals differ)
    counts as "not cached": the kernel then compiles on its first real call, in the caller.
    """
    try:
        sig = tuple(dispatcher.typeof_pyval(a) for a in args)
        if sig not in dispatcher.overloads:
            cache = dispatcher._cache
            key = cache._index_key(sig, dispatcher.targetctx.codegen())
            if key not in cache._cache_file._load_index():
                return False
    except Exception:  # numba internals changed: do not guess
        logger.debug("dropkit: cannot read the numba cache of %r", dispatcher, exc_info=True)
        return False
    dispatcher(*args)
    return True


def cached_njit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(cache=True, **options)`` that falls back instead of failing (see module)."""

    def decorate(fn: Callable[..., Any]) -> Any:
        dispatcher = numba.njit(**options)(fn)
        enable_cache(dispatcher)
        return dispatcher

    return decorate
