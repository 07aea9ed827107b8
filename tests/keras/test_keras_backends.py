"""Run dropkit.keras's checks (and its doctests) on the JAX, PyTorch and TensorFlow backends.

Keras fixes its backend at import, so each backend gets one subprocess with ``KERAS_BACKEND``
set, running ``_backend_checks.py`` and the doctests of ``src/dropkit/keras``. All subprocesses
start together when this module is first used, so their slow imports overlap. This process
never imports Keras (its default backend, TensorFlow, may be missing).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}
# Keras 3.15 converts its variables and torch tensors with np.array(x), which NumPy 2.4 flags
# (their __array__ lacks the copy keyword); saving any Keras model raises it. Not ours to fix.
KERAS_NUMPY_WARNING = (
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def _missing(backend: str) -> str | None:
    if importlib.util.find_spec("keras") is None:
        return "keras is not installed (the [keras] extra)"
    if importlib.util.find_spec(BACKENDS[backend]) is None:
        return f"the {backend} backend is not installed"
    return None


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.Popen]:
    started = {}
    for backend in BACKENDS:
        if _missing(backend) is None:
            env = dict(os.environ, KERAS_BACKEND=backend, PYTHONHASHSEED="0")
            command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                       "-W", KERAS_NUMPY_WARNING, "tests/keras/_backend_checks.py",
                       "src/dropkit/keras"]  # fmt: skip
            started[backend] = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
    yield started
    for process in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_backend_checks_pass(backend, runs):
    reason = _missing(backend)
    if reason is not None:
        pytest.skip(reason)
    output, _ = runs[backend].communicate(timeout=600)
    assert runs[backend].returncode == 0, f"KERAS_BACKEND={backend}:\n{output[-6000:]}"
    assert " passed" in output
    assert " failed" not in output


def test_main_process_did_not_import_keras():
    assert "keras" not in sys.modules
