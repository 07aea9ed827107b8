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
from .learned import (
    ConcreteDropout,
    LearnedDropout,
    SparseVDConv2d,
    SparseVDLinear,
    SpatialConcreteDropout,
    Standout,
    VariationalDropout,
    VariationalDropoutLinear,
)
from .locked import LockedDropout
from .stochastic_depth import StochasticDepth
from .stochastic_depth_blocks import apply_stochastic_depth
from .weight_drop import WeightDrop

__all__ = [
    "AlphaDropout",
    "ConcreteDropout",
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
    "LearnedDropout",
    "LockedDropout",
    "SparseVDConv2d",
    "SparseVDLinear",
    "SpatialConcreteDropout",
    "Standout",
    "StochasticDepth",
    "VariationalDropout",
    "VariationalDropoutLinear",
    "WeightDrop",
    "apply_stochastic_depth",
]
