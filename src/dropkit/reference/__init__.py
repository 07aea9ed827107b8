"""NumPy reference layers: forward and backward for every dropout variant, written to be read.

They are dropkit's test oracle: every faster implementation is checked against them. Each layer
has ``forward(x, training=True)`` and ``backward(dout)``; stochastic layers take ``rng`` (a
``numpy.random.Generator``, int seed or None), keep their last draw in ``.mask`` and accept an
explicit ``mask=`` in ``forward`` to replay one.
"""

from .alpha import ALPHA_PRIME, AlphaDropout, FeatureAlphaDropout, alpha_dropout_affine
from .base import Layer, check_p, make_rng
from .channel import Dropout1d, Dropout2d, Dropout3d
from .concrete import ConcreteDropout, SpatialConcreteDropout
from .dropblock import DropBlock2d, DropBlock3d, drop_probability, seed_probability
from .dropconnect import DropConnectLinear
from .dropout import Dropout
from .droppath import DropPath
from .embedding import EmbeddingDropout
from .gaussian import GaussianDropout
from .gradcheck import gradcheck, gradient_errors
from .layers import Embedding, Linear, ReLU, Sequential, SoftmaxCrossEntropy
from .locked import LockedDropout
from .optim import SGD
from .sparse_vd import SparseVDConv2d, SparseVDLinear, sparse_vd_kl
from .standout import Standout
from .variational import VariationalDropout, VariationalDropoutLinear, variational_dropout_kl

__all__ = [
    "ALPHA_PRIME",
    "SGD",
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
    "Embedding",
    "EmbeddingDropout",
    "FeatureAlphaDropout",
    "GaussianDropout",
    "Layer",
    "Linear",
    "LockedDropout",
    "ReLU",
    "Sequential",
    "SoftmaxCrossEntropy",
    "SparseVDConv2d",
    "SparseVDLinear",
    "SpatialConcreteDropout",
    "Standout",
    "VariationalDropout",
    "VariationalDropoutLinear",
    "alpha_dropout_affine",
    "check_p",
    "drop_probability",
    "gradcheck",
    "gradient_errors",
    "make_rng",
    "seed_probability",
    "sparse_vd_kl",
    "variational_dropout_kl",
]
