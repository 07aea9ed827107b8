"""Layers that learn their dropout rate (Concrete, variational, sparse variational, Standout)."""

from .base import LearnedDropout, dropout_rates, regularization

__all__ = ["LearnedDropout", "dropout_rates", "regularization"]
