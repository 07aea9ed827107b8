"""Regression metrics for a predictive mean and variance (e.g. from MC dropout).

With T MC samples of a regression net, the predictive mean is ``μ = (1/T) Σ_t f_t(x)`` and the
variance ``σ² = τ⁻¹ + (1/T) Σ_t f_t(x)² − μ²`` (Gal & Ghahramani 2016, arXiv:1506.02142), or
``(1/T) Σ_t σ_t² + Var_t f_t(x)`` for a heteroscedastic net (Kendall & Gal 2017).
"""

from __future__ import annotations

import math

import numpy as np

from dropkit.metrics._checks import as_float_array

__all__ = ["gaussian_nll", "rmse"]


def _same_shape(owner: str, **arrays: np.ndarray) -> None:
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        got = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"{owner}: inputs must have the same shape, got {got}")
    if next(iter(arrays.values())).size == 0:
        raise ValueError(f"{owner}: inputs must not be empty")


def gaussian_nll(mean: object, variance: object, targets: object) -> float:
    """Mean Gaussian negative log-likelihood, constant included (nats per element):

    ``(1/M) Σ_j ½ [log(2π σ_j²) + (y_j − μ_j)² / σ_j²]``

    over all M elements (for multi-output targets: the average per output dimension). This is
    ``torch.nn.GaussianNLLLoss(full=True)`` without its variance clamp; torch's default
    ``full=False`` drops the ``½ log 2π`` constant, so its values are lower by ≈ 0.919.

    Shape:
        mean and targets of the same shape; variance of that shape, or a scalar (one noise
        level for all), strictly positive. Returns a Python float.

    Example:
        >>> # the mean of ½(log 2π + 1) and ½ log 8π
        >>> round(gaussian_nll([0.0, 1.0], [1.0, 4.0], [1.0, 1.0]), 6)
        1.515512
    """
    owner = "gaussian_nll"
    mu = as_float_array(mean, "mean", owner)
    y = as_float_array(targets, "targets", owner)
    var = as_float_array(variance, "variance", owner)
    _same_shape(owner, mean=mu, targets=y)
    if var.ndim:  # a scalar variance broadcasts; an array must match, not broadcast by luck
        _same_shape(owner, mean=mu, variance=var)
    if var.size and var.min() <= 0.0:
        raise ValueError(
            f"{owner}: variance must be > 0 (a variance, not a log-variance or std), "
            f"got a minimum of {var.min():.6g}"
        )
    var = np.broadcast_to(var, mu.shape)
    return float(np.mean(0.5 * (math.log(2.0 * math.pi) + np.log(var) + (y - mu) ** 2 / var)))


def rmse(predictions: object, targets: object) -> float:
    """Root mean squared error ``sqrt((1/M) Σ_j (ŷ_j − y_j)²)`` over all M elements.

    Shape:
        predictions and targets of the same shape. Returns a Python float.

    Example:
        >>> rmse([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])  # sqrt(4 / 3)
        1.1547005383792515
    """
    owner = "rmse"
    prediction = as_float_array(predictions, "predictions", owner)
    target = as_float_array(targets, "targets", owner)
    _same_shape(owner, predictions=prediction, targets=target)
    return float(np.sqrt(np.mean((prediction - target) ** 2)))
