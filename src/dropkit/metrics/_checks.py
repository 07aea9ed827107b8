"""Argument checks shared by the metrics and :mod:`dropkit.acquisition`.

Inputs may be torch tensors (any device, any dtype), NumPy arrays or nested lists. Everything is
converted to float64 (int64 for labels) NumPy arrays first, so sums of many small terms do not
lose precision in float32 and every check sees the values the metric will use.
"""

from __future__ import annotations

import numpy as np
import torch

from dropkit.reference.base import check_positive_int  # the one check for sizes and counts

__all__ = ["as_float_array", "as_labels", "check_positive_int", "check_probs", "check_same_length"]

# Rows of a probability table must sum to 1 within this; float32 softmax over ~1000 classes
# is still well inside it, a table of logits or unnormalised scores is not.
SUM_TOLERANCE = 1e-6


def as_float_array(x: object, name: str, owner: str) -> np.ndarray:
    """``x`` as a float64 array; NaN or infinite entries are rejected (they would poison sums)."""
    if isinstance(x, torch.Tensor):
        # via torch's own cast: numpy has no bfloat16, and .numpy() needs a CPU tensor
        x = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    try:
        array = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{owner}: {name} must be an array of real numbers, got {x!r}") from err
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise ValueError(f"{owner}: {name} must be finite, got {bad} NaN/inf entries")
    return array


def check_probs(probs: object, owner: str, layout: str, ndim: int) -> np.ndarray:
    """A float64 array of shape ``layout`` whose last axis is a probability vector."""
    array = as_float_array(probs, "probs", owner)
    if array.ndim != ndim or array.shape[-1] < 1 or array.size == 0:
        raise ValueError(
            f"{owner}: probs must have shape {layout} with no empty axis, got shape {array.shape}"
        )
    if array.min() < 0.0:
        raise ValueError(
            f"{owner}: probs must be non-negative (probabilities, not logits), "
            f"got a minimum of {array.min():.6g}; apply softmax first"
        )
    sums = array.sum(axis=-1)
    worst = np.unravel_index(np.argmax(np.abs(sums - 1.0)), sums.shape)
    if abs(sums[worst] - 1.0) > SUM_TOLERANCE:
        raise ValueError(
            f"{owner}: every row of probs must sum to 1 within {SUM_TOLERANCE:g}, got a sum of "
            f"{sums[worst]:.9g} at index {tuple(int(i) for i in worst)}; apply softmax first"
        )
    return array


def as_labels(
    labels: object, num_classes: int | None, owner: str, name: str = "labels"
) -> np.ndarray:
    """Integer class indices of shape (N,) in ``[0, num_classes)`` (``>= 0`` when None), int64."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"{owner}: {name} must be integer class indices, got dtype {array.dtype}; "
            f"convert them first, e.g. {name}.astype(int) or {name}.long()"
        )
    if array.ndim != 1:
        raise ValueError(f"{owner}: {name} must have shape (N,), got shape {array.shape}")
    if num_classes is None and array.size and array.min() < 0:
        raise ValueError(f"{owner}: {name} must be class indices >= 0, got {int(array.min())}")
    if num_classes is not None and array.size and (array.min() < 0 or array.max() >= num_classes):
        bad = array[(array < 0) | (array >= num_classes)][0]
        raise ValueError(
            f"{owner}: {name} must lie in [0, {num_classes}) for {num_classes} classes "
            f"(the last axis of probs), got {int(bad)}"
        )
    return array.astype(np.int64)


def check_same_length(owner: str, **arrays: np.ndarray) -> int:
    """All arrays have the same first dimension N >= 1; return N."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        got = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"{owner}: inputs must have the same number of samples N, but {got}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError(f"{owner}: inputs must not be empty (N = 0)")
    return n
