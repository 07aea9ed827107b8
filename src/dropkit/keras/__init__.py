"""dropkit for Keras 3: dropout layers Keras lacks, and MC dropout for any Keras model.

Layers written only with ``keras.ops`` and ``keras.random`` (so they run on the JAX, PyTorch
and TensorFlow backends): :class:`DropPath`, :class:`DropBlock2D`, :class:`LockedDropout`,
:class:`EmbeddingDropout`, :class:`ConcreteDropout`, :class:`SpatialConcreteDropout` and
:class:`Standout`; and
:func:`mc_predict`, which samples only the dropout layers of a model (BatchNormalization stays
in inference mode) and summarises the samples as a :class:`dropkit.mc.MCResult`.

Keras picks its backend when it is first imported, from the ``KERAS_BACKEND`` environment
variable (else ``~/.keras/keras.json``, else TensorFlow). dropkit never sets it: choose it
yourself before the first ``import keras``, e.g. ``KERAS_BACKEND=jax``.

Needs the ``[keras]`` extra (``pip install 'dropkit[keras]'``). The names are loaded on first
use, so ``from dropkit.keras import DropPath`` without Keras raises one ImportError that names
the extra.
"""

from __future__ import annotations

import importlib
import importlib.util

_EXPORTS = {
    "DropPath": "droppath",
    "DropBlock2D": "dropblock",
    "drop_block_keep_mask": "dropblock",
    "LockedDropout": "locked",
    "EmbeddingDropout": "embedding",
    "ConcreteDropout": "concrete",
    "SpatialConcreteDropout": "concrete",
    "Standout": "standout",
    "mc_predict": "mc",
    "MC_LAYER_TYPES": "mc",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # Lazy on purpose: importing Keras fixes its backend, which must stay the user's choice,
    # and the package must be importable (e.g. by test collection) where Keras is absent.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dropkit.keras' has no attribute {name!r}")
    if importlib.util.find_spec("keras") is None:
        raise ImportError(
            "dropkit.keras needs Keras 3, which is not installed: pip install 'dropkit[keras]'"
        )
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
