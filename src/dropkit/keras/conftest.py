"""Doctest collection of dropkit.keras only in a process whose Keras backend can be imported.

Importing Keras fixes its backend (``KERAS_BACKEND``, default TensorFlow), so the main test
process, which must not pick a backend, skips these modules; ``tests/keras`` runs their
doctests in one subprocess per backend.
"""

import importlib.util
import os


def _backend_ready() -> bool:
    backend = os.environ.get("KERAS_BACKEND")
    module = {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}.get(backend or "")
    return (
        module is not None
        and importlib.util.find_spec("keras") is not None
        and importlib.util.find_spec(module) is not None
    )


collect_ignore_glob = [] if _backend_ready() else ["*.py"]
