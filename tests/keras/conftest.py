"""``_backend_checks.py`` imports Keras, so it is collected only in a process whose
``KERAS_BACKEND`` names an installed backend (the subprocesses of test_keras_backends.py)."""

import importlib.util
import os

_ready = (
    os.environ.get("KERAS_BACKEND") in ("jax", "torch", "tensorflow")
    and all(
        importlib.util.find_spec(name) is not None
        for name in ("keras", os.environ["KERAS_BACKEND"])
    )
    if os.environ.get("KERAS_BACKEND")
    else False
)

collect_ignore = [] if _ready else ["_backend_checks.py"]
