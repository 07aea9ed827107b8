"""Collection rules for the doctests under ``src``.

``dropkit.keras``'s doctests are collected only in a process whose Keras backend can be
imported: importing Keras fixes its backend (``KERAS_BACKEND``, default TensorFlow), so the main
test process, which must not pick a backend, skips them; ``tests/keras`` runs them in one
subprocess per backend. (Kept here rather than in the package so the wheel ships no test code.)
"""

import importlib.util
import os


def _keras_backend_ready() -> bool:
    backend = os.environ.get("KERAS_BACKEND")
    module = {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}.get(backend or "")
    return (
        module is not None
        and importlib.util.find_spec("keras") is not None
        and importlib.util.find_spec(module) is not None
    )


collect_ignore_glob = [] if _keras_backend_ready() else ["src/dropkit/keras/*.py"]
