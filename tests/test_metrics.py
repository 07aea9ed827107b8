"""dropkit.metrics scores: NLL, Brier, error/OOD detection areas and the regression metrics, by
hand and against scikit-learn, torch and scipy. Calibration: tests/test_metrics_calibration.py."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from dropkit.metrics import (
    brier_score,
    gaussian_nll,
    misclassification_aupr,
    misclassification_auroc,
    negative_log_likelihood,
    ood_aupr,
    ood_auroc,
    rmse,
)

sk_metrics = pytest.importorskip("sklearn.metrics")


def random_problem(seed: int, n: int = 400, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(k), size=n), rng.integers(0, k, n)


def pairwise_auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """Mann-Whitney form, independent of sklearn: P(s_pos > s_neg) + P(s_pos = s_neg) / 2."""
    diff = positives[:, None] - negatives[None, :]
    return float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))


# -- NLL and Brier ---------------------------------------------------------------------------
def test_nll_and_brier_by_hand() -> None:
    probs, labels = [[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]], [0, 1]
    assert negative_log_likelihood(probs, labels) == pytest.approx(
        -(math.log(0.7) + math.log(0.25)) / 2, rel=1e-14
    )
    brier = ((0.3**2 + 0.2**2 + 0.1**2) + (0.25**2 + 0.75**2 + 0.5**2)) / 2
    assert brier_score(probs, labels) == pytest.approx(brier, rel=1e-14)


def test_nll_eps_clips_a_zero_probability_and_eps_zero_gives_inf() -> None:
    probs, labels = [[1.0, 0.0], [0.5, 0.5]], [1, 0]
    assert negative_log_likelihood(probs, labels) == pytest.approx(
        (-math.log(1e-12) + math.log(2)) / 2, rel=1e-14
    )
    assert negative_log_likelihood(probs, labels, eps=0.0) == math.inf
    with pytest.raises(ValueError, match=r"eps must be a real number in \[0, 1\), got 1.5"):
        negative_log_likelihood(probs, labels, eps=1.5)


@pytest.mark.parametrize("k", [2, 5])
def test_nll_matches_sklearn_log_loss(k: int) -> None:
    probs, labels = random_problem(0, k=k)
    expected = sk_metrics.log_loss(labels, probs, labels=list(range(k)))
    assert negative_log_likelihood(probs, labels) == pytest.approx(expected, rel=1e-12)


def test_nll_matches_torch_cross_entropy_on_log_probs() -> None:
    logits = torch.randn(64, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 7, (64,), generator=torch.Generator().manual_seed(2))
    expected = torch.nn.functional.cross_entropy(logits, labels).item()
    assert negative_log_likelihood(logits.softmax(1), labels) == pytest.approx(expected, 1e-12)


def test_brier_is_twice_sklearn_binary_brier_score_loss() -> None:
    # sklearn scores only the positive class: (p1 - y)²; the sum over both classes doubles it.
    rng = np.random.default_rng(3)
    p1, y = rng.random(300), rng.integers(0, 2, 300)
    probs = np.stack([1 - p1, p1], axis=1)
    expected = 2 * sk_metrics.brier_score_loss(y, p1)
    assert brier_score(probs, y) == pytest.approx(expected, rel=1e-12)


def test_brier_matches_sklearn_multiclass_unscaled() -> None:
    if "scale_by_half" not in inspect.signature(sk_metrics.brier_score_loss).parameters:
        pytest.skip("this scikit-learn has no multi-class brier_score_loss (added in 1.7)")
    probs, labels = random_problem(4, k=6)
    expected = sk_metrics.brier_score_loss(labels, probs, labels=range(6), scale_by_half=False)
    assert brier_score(probs, labels) == pytest.approx(expected, rel=1e-12)


def test_perfect_and_worst_predictions() -> None:
    eye = np.eye(3)
    assert brier_score(eye, [0, 1, 2]) == 0.0
    assert brier_score(eye, [1, 2, 0]) == 2.0
    assert negative_log_likelihood(eye, [0, 1, 2]) == 0.0


# -- uncertainty ranking ---------------------------------------------------------------------
def test_misclassification_areas_match_sklearn_and_the_pairwise_definition() -> None:
    probs, labels = random_problem(5)
    rng = np.random.default_rng(6)
    errors = probs.argmax(1) != labels
    scores = 1.0 - probs.max(1) + 0.3 * rng.random(len(labels))  # informative but noisy
    auroc = misclassification_auroc(scores, probs, labels)
    assert auroc == pytest.approx(pairwise_auroc(scores[~errors], scores[errors]), rel=1e-12)
    assert auroc == pytest.approx(sk_metrics.roc_auc_score(errors, scores), rel=1e-12)
    assert 0.5 < auroc < 1.0
    aupr = misclassification_aupr(scores, probs, labels)
    assert aupr == pytest.approx(sk_metrics.average_precision_score(errors, scores), rel=1e-12)
    # predicted classes instead of probs give the same areas
    assert misclassification_auroc(scores, probs.argmax(1), labels) == auroc
    assert misclassification_aupr(torch.tensor(scores), probs.argmax(1), labels) == aupr


def test_misclassification_aupr_by_hand() -> None:
    # ranking by score: err, ok, err, ok -> precision at the recalls 1/2, 1: 1 and 2/3
    scores, preds, labels = [0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0], [0, 0, 0, 0]
    assert misclassification_aupr(scores, preds, labels) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert misclassification_auroc(scores, preds, labels) == pytest.approx(3 / 4)


def test_ood_areas_match_sklearn_with_ood_as_positive() -> None:
    rng = np.random.default_rng(7)
    s_in, s_out = rng.normal(0.0, 1.0, 500), rng.normal(1.0, 1.0, 300).round(1)  # with ties
    auroc = ood_auroc(s_in, s_out)
    assert auroc == pytest.approx(pairwise_auroc(s_in, s_out), rel=1e-12)
    assert ood_auroc(s_out, s_in) == pytest.approx(1.0 - auroc, rel=1e-12)
    y = np.r_[np.zeros(500), np.ones(300)]
    expected = sk_metrics.average_precision_score(y, np.r_[s_in, s_out])
    assert ood_aupr(torch.tensor(s_in), s_out) == pytest.approx(expected, rel=1e-12)
    assert ood_auroc([0.0, 0.1], [0.5]) == 1.0
    assert ood_aupr([0.0, 0.1], [0.5]) == 1.0


# -- regression ------------------------------------------------------------------------------
def test_gaussian_nll_matches_scipy_and_torch_full() -> None:
    norm = pytest.importorskip("scipy.stats").norm
    rng = np.random.default_rng(8)
    mean, var, y = rng.normal(size=(50, 2)), rng.random((50, 2)) + 0.1, rng.normal(size=(50, 2))
    value = gaussian_nll(mean, var, y)
    assert value == pytest.approx(-norm.logpdf(y, mean, np.sqrt(var)).mean(), rel=1e-12)
    loss = torch.nn.functional.gaussian_nll_loss(
        torch.tensor(mean), torch.tensor(y), torch.tensor(var), full=True, eps=1e-300
    )
    assert value == pytest.approx(loss.item(), rel=1e-12)
    # a scalar variance is one noise level for every element
    assert gaussian_nll(mean, 0.5, y) == pytest.approx(gaussian_nll(mean, np.full_like(y, 0.5), y))


def test_rmse_by_hand_and_vs_sklearn() -> None:
    assert rmse([[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 0.0]]) == 2.0
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=40), rng.normal(size=40)
    assert rmse(torch.tensor(a), b) == pytest.approx(
        math.sqrt(sk_metrics.mean_squared_error(b, a)), rel=1e-12
    )


# -- bad inputs ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: negative_log_likelihood([[2.0, 1.0]], [0]), r"probs.*sum to 1.*got a sum of 3"),
        (lambda: brier_score([0.5, 0.5], [0]), r"probs must have shape \(N, K\).*\(2,\)"),
        (lambda: brier_score([[0.5, 0.5]], [3]), r"labels must lie in \[0, 2\).*got 3"),
        (lambda: brier_score([[0.5, 0.5]], [[0]]), r"labels must have shape \(N,\)"),
        (
            lambda: misclassification_auroc([0.1, 0.2], [0, 1], [0, 1]),
            r"every prediction is correct",
        ),
        (lambda: misclassification_aupr([0.1], [1], [0]), r"every prediction is wrong"),
        (
            lambda: misclassification_auroc([0.1], [0, 1], [0, 1]),
            r"scores has 1, probs_or_preds has 2",
        ),
        (lambda: misclassification_auroc([0.1, 0.2], [-1, 1], [0, 0]), r"probs_or_preds.*>= 0"),
        (lambda: ood_auroc([], [0.1]), r"scores_in must have shape \(N,\) with N >= 1"),
        (lambda: ood_aupr([0.1], [[0.2]]), r"scores_out must have shape \(N,\)"),
        (lambda: gaussian_nll([0.0], [0.0], [1.0]), r"variance must be > 0.*got a minimum of 0"),
        (lambda: gaussian_nll([0.0, 1.0], [1.0], [1.0, 1.0]), r"same shape.*variance \(1,\)"),
        (lambda: rmse([0.0, 1.0], [1.0]), r"rmse: inputs must have the same shape"),
        (lambda: rmse([math.inf], [1.0]), r"predictions must be finite"),
    ],
)
def test_bad_inputs_are_rejected_with_the_argument_named(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
