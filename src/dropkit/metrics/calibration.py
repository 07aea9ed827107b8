"""Expected calibration error and the reliability diagram behind it.

Binning follows Guo et al. (2017, arXiv:1706.04599): bin b holds the confidences in
``(edge_b, edge_{b+1}]``, the first bin also takes a confidence of exactly 0 and the last one is
closed on the right, so a confidence of exactly 1.0 lands in the last bin, not in a phantom bin
of its own (Lightning-AI/torchmetrics#3510) and 0.0 does not fall off the front
(torchmetrics#1646, #1744). These are the bins of :func:`sklearn.calibration.calibration_curve`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dropkit.metrics._checks import (
    as_float_array,
    as_labels,
    check_positive_int,
    check_probs,
    check_same_length,
)

__all__ = ["ReliabilityDiagram", "expected_calibration_error", "reliability_diagram"]

STRATEGIES = ("uniform", "quantile")


@dataclass(frozen=True, eq=False)
class ReliabilityDiagram:
    """Per-bin statistics of a reliability diagram (the input of :func:`plot_reliability_diagram`).

    Attributes:
        edges: (n_bins + 1,) bin edges; bin b is ``(edges[b], edges[b + 1]]`` (the first bin
            also holds ``edges[0]``).
        confidence: (n_bins,) mean confidence in each bin, NaN for an empty bin.
        accuracy: (n_bins,) accuracy in each bin (top-label) or fraction of positives (binary),
            NaN for an empty bin.
        counts: (n_bins,) number of samples in each bin (int64).
        kind: ``"top-label"`` (probs of shape (N, K)) or ``"binary"`` (probs of shape (N,)).
        strategy: ``"uniform"`` or ``"quantile"``.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray
    kind: str
    strategy: str

    @property
    def ece(self) -> float:
        """Σ_b (|B_b| / n)·|acc(B_b) − conf(B_b)| over the non-empty bins."""
        full = self.counts > 0
        gaps = np.abs(self.accuracy[full] - self.confidence[full])
        return float(np.sum(self.counts[full] * gaps) / self.counts.sum())


def _diagram(
    probs: object, labels: object, n_bins: object, strategy: object, owner: str
) -> ReliabilityDiagram:
    n_bins = check_positive_int(n_bins, "n_bins", owner)
    if strategy not in STRATEGIES:
        raise ValueError(f"{owner}: strategy must be one of {STRATEGIES}, got {strategy!r}")
    array = as_float_array(probs, "probs", owner)
    if array.ndim == 1:  # binary: probs[i] = P(y_i = 1), the classic reliability-curve setting
        if array.size and not 0.0 <= array.min() <= array.max() <= 1.0:
            bad = array[(array < 0.0) | (array > 1.0)][0]
            raise ValueError(
                f"{owner}: binary probs (shape (N,)) must lie in [0, 1], got {bad:.6g}"
            )
        y = as_labels(labels, 2, owner)
        confidence, hit, kind = array, y.astype(np.float64), "binary"
    else:
        p = check_probs(array, owner, "(N, K) or (N,) for binary", 2)
        y = as_labels(labels, p.shape[1], owner)
        confidence = p.max(axis=1)
        hit = (p.argmax(axis=1) == y).astype(np.float64)
        kind = "top-label"
    check_same_length(owner, probs=confidence, labels=y)

    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:  # equal-mass bins (adaptive ECE); ties can still leave some bins empty
        edges = np.quantile(confidence, np.linspace(0.0, 1.0, n_bins + 1))
    # searchsorted on the inner edges (side="left") puts edges[b] < c <= edges[b+1] in bin b,
    # everything <= edges[1] (0.0 included) in bin 0 and everything above edges[-2] (1.0
    # included) in the last bin: no index -1, no index n_bins.
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore"):  # 0/0 -> NaN marks an empty bin, on purpose
        mean_conf = np.bincount(index, weights=confidence, minlength=n_bins) / counts
        mean_acc = np.bincount(index, weights=hit, minlength=n_bins) / counts
    return ReliabilityDiagram(edges, mean_conf, mean_acc, counts.astype(np.int64), kind, strategy)


def reliability_diagram(
    probs: object, labels: object, n_bins: int = 15, *, strategy: str = "uniform"
) -> ReliabilityDiagram:
    """Bin the predictions by confidence; per bin, mean confidence, accuracy and count.

    Top-label (Guo et al. 2017): for ``probs`` of shape (N, K), confidence
    ``c_i = max_k p_ik`` and hit ``1[argmax_k p_ik = y_i]``. Binary (the classic reliability
    curve, Niculescu-Mizil & Caruana 2005): for ``probs`` of shape (N,) holding P(y_i = 1),
    confidence ``c_i = p_i`` and hit ``y_i`` (labels in {0, 1}), as in
    :func:`sklearn.calibration.calibration_curve` and torchmetrics' ``BinaryCalibrationError``.

    Args:
        probs: (N, K) rows on the probability simplex, or (N,) probabilities of class 1.
        labels: (N,) integer classes in [0, K).
        n_bins: number of bins, >= 1.
        strategy: ``"uniform"``: equal-width bins on [0, 1]; ``"quantile"``: equal-mass bins
            with edges at the quantiles of the confidences (adaptive ECE, Nixon et al. 2019).

    Example:
        >>> d = reliability_diagram([[0.9, 0.1], [0.4, 0.6], [0.0, 1.0]], [0, 0, 1], n_bins=2)
        >>> d.counts.tolist(), d.accuracy.tolist()
        ([0, 3], [nan, 0.6666666666666666])
    """
    return _diagram(probs, labels, n_bins, strategy, "reliability_diagram")


def expected_calibration_error(
    probs: object, labels: object, n_bins: int = 15, *, strategy: str = "uniform"
) -> float:
    """Expected calibration error (Naeini, Cooper & Hauskrecht 2015; Guo et al. 2017).

    ``ECE = Σ_b (|B_b| / n)·|acc(B_b) − conf(B_b)|`` with the bins of
    :func:`reliability_diagram` (see there for the top-label and binary forms and for the
    ``strategy`` options); empty bins contribute 0. ECE depends on ``n_bins``: compare values
    computed with the same binning only.

    Shape:
        probs (N, K) or (N,); labels (N,). Returns a Python float in [0, 1].

    Example:
        >>> probs = [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [1.0, 0.0]]
        >>> round(expected_calibration_error(probs, [0, 1, 1, 0], n_bins=4), 12)
        0.225
    """
    return _diagram(probs, labels, n_bins, strategy, "expected_calibration_error").ece
