"""PyTorch dropout modules, drop-in replacements with validated arguments.

Each module stores its hyper-parameters, follows ``model.train()`` / ``model.eval()`` and calls
one :mod:`dropkit.functional` op in ``forward``.
"""

from .alpha import AlphaDropout, FeatureAlphaDropout
from .base import DropoutModule
from .channel import Dropout1d, Dropout2d, Dropout3d
from .dropblock import DropBlock2d, DropBlock3d
from .dropconnect import DropConnectLinear
from .dropout import Dropout
from .droppath import DropPath
from .embedding import EmbeddingDropout
from .gaussian import GaussianDropout
from .locked import LockedDropout
from .weight_drop import WeightDrop

__all__ = [
    "AlphaDropout",
    "DropBlock2d",
    "DropBlock3d",
    "DropConnectLinear",
    "DropPath",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "DropoutModule",
    "EmbeddingDropout",
    "FeatureAlphaDropout",
    "GaussianDropout",
    "LockedDropout",
    "WeightDrop",
]
