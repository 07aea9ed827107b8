"""Layers that learn their dropout rate (Concrete, variational, sparse variational, Standout).

Each is a :class:`LearnedDropout` with ``regularization()`` (the term its paper adds to the loss)
and ``rates()``; :func:`regularization` and :func:`dropout_rates` collect them over a model.
"""

from .base import LearnedDropout, dropout_rates, regularization
from .concrete import (
    ConcreteDropout,
    SpatialConcreteDropout,
    concrete_dropout,
    concrete_regularizers,
)
from .sparse_vd import SparseVDConv2d, SparseVDLinear, compression, sparse_vd_kl, sparsity_report
from .standout import Standout
from .variational import (
    VariationalDropout,
    VariationalDropoutLinear,
    variational_dropout,
    variational_dropout_kl,
    variational_linear,
)

__all__ = [
    "ConcreteDropout",
    "LearnedDropout",
    "SparseVDConv2d",
    "SparseVDLinear",
    "SpatialConcreteDropout",
    "Standout",
    "VariationalDropout",
    "VariationalDropoutLinear",
    "compression",
    "concrete_dropout",
    "concrete_regularizers",
    "dropout_rates",
    "regularization",
    "sparse_vd_kl",
    "sparsity_report",
    "variational_dropout",
    "variational_dropout_kl",
    "variational_linear",
]
