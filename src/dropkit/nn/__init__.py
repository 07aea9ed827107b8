"""PyTorch dropout modules, drop-in replacements with validated arguments.

Each module stores its hyper-parameters, follows ``model.train()`` / ``model.eval()`` and calls
one :mod:`dropkit.functional` op in ``forward``.
"""

from .alpha import AlphaDropout, FeatureAlphaDropout
from .base import DropoutModule
from .channel import Dropout1d, Dropout2d, Dropout3d
from .dropout import Dropout
from .droppath import DropPath
from .gaussian import GaussianDropout
from .locked import LockedDropout

__all__ = [
    "AlphaDropout",
    "DropPath",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "DropoutModule",
    "FeatureAlphaDropout",
    "GaussianDropout",
    "LockedDropout",
]
