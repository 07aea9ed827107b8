"""Proper scoring rules and uncertainty-ranking scores for classifiers.

* :func:`negative_log_likelihood`, :func:`brier_score`: how good the predicted distribution is.
* :func:`misclassification_auroc` / :func:`misclassification_aupr`: does a high uncertainty
  score flag the model's own errors (Hendrycks & Gimpel 2017, arXiv:1610.02136)?
* :func:`ood_auroc` / :func:`ood_aupr`: does it separate out-of-distribution inputs (positive)
  from in-distribution ones?

The areas are scikit-learn's :func:`~sklearn.metrics.roc_auc_score` and
:func:`~sklearn.metrics.average_precision_score` (AUPR as average precision: the step-wise sum
``Σ_n (R_n − R_{n−1}) P_n``, no trapezoidal interpolation), imported when first called.
"""

from __future__ import annotations

import numbers

import numpy as np

from dropkit.metrics._checks import as_float_array, as_labels, check_probs, check_same_length
from dropkit.metrics._optional import require

__all__ = ["brier_score", "misclassification_aupr", "misclassification_auroc"]
__all__ += ["negative_log_likelihood", "ood_aupr", "ood_auroc"]


def negative_log_likelihood(probs: object, labels: object, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood ``−(1/N) Σ_i log max(p_{i, y_i}, eps)`` (natural log, nats).

    ``eps`` keeps one confidently wrong prediction (p = 0) from making the mean infinite; pass
    ``eps=0`` to get ``inf`` in that case. For MC dropout pass the averaged probabilities
    ``mean_t p_t`` (the predictive distribution), not per-sample ones.

    Shape:
        probs (N, K) on the simplex; labels (N,) integers in [0, K). Returns a Python float.

    Example:
        >>> # (ln 2 + ln(1/0.9)) / 2
        >>> round(negative_log_likelihood([[0.5, 0.5], [0.1, 0.9]], [0, 1]), 6)
        0.399254
    """
    owner = "negative_log_likelihood"
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0.0 <= eps < 1.0:
        raise ValueError(f"{owner}: eps must be a real number in [0, 1), got {eps!r}")
    p = check_probs(probs, owner, "(N, K)", 2)
    y = as_labels(labels, p.shape[1], owner)
    check_same_length(owner, probs=p, labels=y)
    picked = np.maximum(p[np.arange(len(y)), y], eps)
    with np.errstate(divide="ignore"):  # eps = 0 and p = 0: -log 0 = inf is the honest answer
        return float(-np.mean(np.log(picked)))


def brier_score(probs: object, labels: object) -> float:
    """Multi-class Brier score ``(1/N) Σ_i Σ_c (p_ic − 1[y_i = c])²`` (Brier 1950), in [0, 2].

    This is Brier's original sum over all K classes; for K = 2 it is twice scikit-learn's
    binary ``brier_score_loss`` (which scores only the positive class).

    Shape:
        probs (N, K) on the simplex; labels (N,) integers in [0, K). Returns a Python float.

    Example:
        >>> brier_score([[0.75, 0.25], [0.5, 0.5]], [0, 1])  # ((1/16 + 1/16) + (1/4 + 1/4)) / 2
        0.3125
    """
    owner = "brier_score"
    p = check_probs(probs, owner, "(N, K)", 2)
    y = as_labels(labels, p.shape[1], owner)
    check_same_length(owner, probs=p, labels=y)
    residual = p.copy()
    residual[np.arange(len(y)), y] -= 1.0
    return float(np.mean(np.sum(residual**2, axis=1)))


def _scores(scores: object, name: str, owner: str) -> np.ndarray:
    array = as_float_array(scores, name, owner)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{owner}: {name} must have shape (N,) with N >= 1, got {array.shape}")
    return array


def _errors(scores: object, probs_or_preds: object, labels: object, owner: str) -> tuple:
    """(uncertainty scores, 1 where the prediction is wrong) for the misclassification scores."""
    s = _scores(scores, "scores", owner)
    if np.ndim(probs_or_preds) == 2:
        probs = check_probs(probs_or_preds, owner, "(N, K) probs or (N,) predicted classes", 2)
        preds, num_classes = probs.argmax(axis=1), probs.shape[1]
    else:
        preds, num_classes = as_labels(probs_or_preds, None, owner, "probs_or_preds"), None
    y = as_labels(labels, num_classes, owner)
    check_same_length(owner, scores=s, probs_or_preds=preds, labels=y)
    errors = (preds != y).astype(np.int64)
    if errors.min() == errors.max():  # one class only: the area is undefined, not 0.5
        what = "wrong" if errors[0] else "correct"
        raise ValueError(
            f"{owner}: undefined when every prediction is {what} (nothing to separate); "
            f"got {len(y)} {what} predictions"
        )
    return s, errors


def misclassification_auroc(scores: object, probs_or_preds: object, labels: object) -> float:
    """AUROC of detecting misclassified samples from an uncertainty score.

    Positives are the errors ``argmax_k p_ik ≠ y_i``; ``scores`` must be higher for more
    uncertain samples (e.g. predictive entropy, or ``1 − max_k p_ik``). 1 = every error is
    ranked above every correct prediction, 0.5 = chance.

    Shape:
        scores (N,); probs_or_preds (N, K) probs or (N,) predicted classes; labels (N,).

    Example:
        >>> misclassification_auroc([0.9, 0.1, 0.5], [1, 0, 0], [0, 0, 0])
        1.0
    """
    roc_auc_score = require("sklearn.metrics", "ROC/PR areas").roc_auc_score

    s, errors = _errors(scores, probs_or_preds, labels, "misclassification_auroc")
    return float(roc_auc_score(errors, s))


def misclassification_aupr(scores: object, probs_or_preds: object, labels: object) -> float:
    """Area under the precision-recall curve (average precision) of detecting errors, with the
    errors as the positive class; see :func:`misclassification_auroc` for the arguments.
    Chance level is the error rate.

    Example:
        >>> misclassification_aupr([0.9, 0.1, 0.5], [1, 0, 0], [0, 0, 0])
        1.0
    """
    average_precision_score = require("sklearn.metrics", "ROC/PR areas").average_precision_score

    s, errors = _errors(scores, probs_or_preds, labels, "misclassification_aupr")
    return float(average_precision_score(errors, s))


def _ood(scores_in: object, scores_out: object, owner: str) -> tuple:
    s_in = _scores(scores_in, "scores_in", owner)
    s_out = _scores(scores_out, "scores_out", owner)
    is_out = np.concatenate([np.zeros(len(s_in), np.int64), np.ones(len(s_out), np.int64)])
    return is_out, np.concatenate([s_in, s_out])


def ood_auroc(scores_in: object, scores_out: object) -> float:
    """AUROC of telling out-of-distribution inputs (positive) from in-distribution ones by an
    uncertainty score (higher = more uncertain): P(s_out > s_in) + P(s_out = s_in)/2.

    Shape:
        scores_in (N_in,), scores_out (N_out,), both non-empty. Returns a Python float.

    Example:
        >>> ood_auroc([0.1, 0.2, 0.6], [0.5, 0.9])  # 5 of the 6 (out, in) pairs are ordered
        0.8333333333333334
    """
    roc_auc_score = require("sklearn.metrics", "ROC/PR areas").roc_auc_score

    return float(roc_auc_score(*_ood(scores_in, scores_out, "ood_auroc")))


def ood_aupr(scores_in: object, scores_out: object) -> float:
    """Average precision of detecting the out-of-distribution inputs (the positives) by an
    uncertainty score; chance level is ``N_out / (N_in + N_out)``. See :func:`ood_auroc`.

    Example:
        >>> round(ood_aupr([0.1, 0.2, 0.6], [0.5, 0.9]), 6)  # (1/2)(1/1) + (1/2)(2/3)
        0.833333
    """
    average_precision_score = require("sklearn.metrics", "ROC/PR areas").average_precision_score

    return float(average_precision_score(*_ood(scores_in, scores_out, "ood_aupr")))
