"""Metrics for uncertainty estimates: calibration, proper scores, error/OOD detection, regression.

Every function takes torch tensors (any device or dtype), NumPy arrays or lists, computes in
float64 NumPy and returns a Python float (or, for :func:`reliability_diagram`, a dataclass of
arrays). Classification probabilities come as ``probs`` of shape (N, K) whose rows lie on the
simplex (non-negative, summing to 1 within 1e-6); for MC dropout that is the averaged
prediction ``mean_t softmax(f_t(x))``. Labels are (N,) integers in [0, K).

* calibration: :func:`expected_calibration_error`, :func:`reliability_diagram`,
  :func:`plot_reliability_diagram` (matplotlib, imported on first use)
* scores: :func:`negative_log_likelihood`, :func:`brier_score`
* uncertainty ranking: :func:`misclassification_auroc`, :func:`misclassification_aupr`,
  :func:`ood_auroc`, :func:`ood_aupr`
* regression: :func:`gaussian_nll`, :func:`rmse`

Uncertainty scores from MC samples (predictive entropy, mutual information, ...) live in
:mod:`dropkit.acquisition`.
"""

from dropkit.metrics.calibration import (
    ReliabilityDiagram,
    expected_calibration_error,
    reliability_diagram,
)
from dropkit.metrics.plots import plot_reliability_diagram
from dropkit.metrics.regression import gaussian_nll, rmse
from dropkit.metrics.scores import (
    brier_score,
    misclassification_aupr,
    misclassification_auroc,
    negative_log_likelihood,
    ood_aupr,
    ood_auroc,
)

__all__ = [
    "ReliabilityDiagram",
    "brier_score",
    "expected_calibration_error",
    "gaussian_nll",
    "misclassification_aupr",
    "misclassification_auroc",
    "negative_log_likelihood",
    "ood_aupr",
    "ood_auroc",
    "plot_reliability_diagram",
    "reliability_diagram",
    "rmse",
]
