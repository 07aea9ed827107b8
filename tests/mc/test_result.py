"""MCResult summaries: entropy / mutual-information identities and the likelihoods by hand."""

from __future__ import annotations

import math

import pytest
import torch

from dropkit import mc
from dropkit.mc.result import summarize


def _entropy(p: torch.Tensor) -> torch.Tensor:  # over dim 1, by hand, with 0 log 0 = 0
    return -(p * torch.where(p > 0, p.log(), 0.0)).sum(1)


def test_classification_summaries_by_hand():
    logits = torch.randn(9, 5, 4, generator=torch.Generator().manual_seed(0)) * 3  # (T, N, C)
    r = summarize(logits, "classification", "loop")
    probs = logits.softmax(-1)
    torch.testing.assert_close(r.samples, probs)
    torch.testing.assert_close(r.samples.sum(-1), torch.ones(9, 5))
    torch.testing.assert_close(r.mean, probs.mean(0))  # probabilities averaged, not logits
    assert not torch.allclose(r.mean, logits.mean(0).softmax(-1))
    torch.testing.assert_close(r.variance, probs.var(0, correction=0))
    torch.testing.assert_close(r.predictive_entropy, _entropy(probs.mean(0)))
    torch.testing.assert_close(r.expected_entropy, _entropy(probs.flatten(0, 1)).view(9, 5).mean(0))
    torch.testing.assert_close(r.mutual_information, r.predictive_entropy - r.expected_entropy)
    assert (r.mutual_information > 0).all()
    assert (r.mutual_information <= r.predictive_entropy).all()
    assert r.num_samples == 9


def test_identical_samples_have_zero_mutual_information():
    logits = torch.randn(1, 200, 5, generator=torch.Generator().manual_seed(0)).expand(7, 200, 5)
    r = summarize(logits, "classification", "batched")
    # Rounding in the mean of 7 equal rows makes the raw difference +-3e-7; MI is clamped at 0.
    assert (r.mutual_information >= 0).all()
    assert r.mutual_information.max() < 1e-6
    torch.testing.assert_close(r.expected_entropy, r.predictive_entropy)
    assert (r.variation_ratio == 0).all()
    assert r.variance.max() < 1e-12


def test_zero_probabilities_give_finite_entropies():
    logits = torch.tensor([[[0.0, -math.inf, 0.0]], [[-math.inf, 0.0, -math.inf]]])
    r = summarize(logits, "classification", "loop")
    torch.testing.assert_close(r.expected_entropy, torch.tensor([math.log(2) / 2]))
    p = torch.tensor([0.25, 0.5, 0.25])
    torch.testing.assert_close(r.predictive_entropy, -(p * p.log()).sum().view(1))
    assert torch.isfinite(r.mutual_information).all()


def test_variation_ratio_counts_the_modal_class():
    votes = torch.tensor([0, 0, 1, 2, 0, 1])  # mode 0 in 3 of 6 samples
    logits = torch.nn.functional.one_hot(votes, 3).float()[:, None] * 10  # (T, 1, C)
    r = summarize(logits, "classification", "loop")
    torch.testing.assert_close(r.variation_ratio, torch.tensor([0.5]))


def test_dense_outputs_use_class_dim_one():
    logits = torch.randn(4, 2, 3, 5, 5)  # (T, N, C, H, W)
    r = summarize(logits, "classification", "loop")
    torch.testing.assert_close(r.samples.sum(2), torch.ones(4, 2, 5, 5))
    assert r.predictive_entropy.shape == r.variation_ratio.shape == (2, 5, 5)
    targets = torch.randint(0, 3, (2, 5, 5))
    expected = r.mean.gather(1, targets[:, None]).log().mean()
    torch.testing.assert_close(
        summarize(logits, "classification", "x", targets=targets).log_likelihood, expected
    )


def test_regression_variance_and_log_likelihood_by_hand():
    outputs = torch.tensor([[[0.0], [2.0]], [[1.0], [2.0]]], dtype=torch.float64)  # (T=2, N=2, 1)
    y, tau = torch.tensor([[0.5], [3.0]], dtype=torch.float64), 2.0
    r = summarize(outputs, "regression", "loop", tau=tau, targets=y)
    torch.testing.assert_close(r.mean, torch.tensor([[0.5], [2.0]], dtype=torch.float64))
    torch.testing.assert_close(r.variance, torch.tensor([[0.25 + 0.5], [0.5]], dtype=torch.float64))

    def density(y, mu):  # N(y; mu, 1/tau)
        return math.sqrt(tau / (2 * math.pi)) * math.exp(-tau / 2 * (y - mu) ** 2)

    first = math.log((density(0.5, 0.0) + density(0.5, 1.0)) / 2)
    second = math.log((density(3.0, 2.0) + density(3.0, 2.0)) / 2)
    assert r.log_likelihood.item() == pytest.approx((first + second) / 2, rel=1e-12)
    assert summarize(outputs, "regression", "loop").variance[0, 0].item() == 0.25
    assert summarize(outputs, "regression", "loop").log_likelihood is None


def test_predict_regression_end_to_end():
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    x, y = torch.randn(5, 3), torch.randn(5, 1)
    r = mc.predict(model, x, 30, task="regression", tau=4.0, targets=y, seed=0)
    assert r.samples.shape == (30, 5, 1)
    torch.testing.assert_close(r.variance, r.samples.var(0, correction=0) + 0.25)
    mu = r.samples.double()
    ll = (
        torch.logsumexp(-2.0 * (y.double() - mu) ** 2, 0)
        - math.log(30)
        - 0.5 * math.log(2 * math.pi / 4.0)
    )
    assert r.log_likelihood.item() == pytest.approx(ll.mean().item(), rel=1e-5)
    assert r.predictive_entropy is None


def test_classification_needs_a_class_dim():
    with pytest.raises(ValueError, match="regression"):
        summarize(torch.randn(3, 4), "classification", "loop")


def test_repr_is_one_line_with_shapes_and_headline_numbers():
    torch.manual_seed(0)
    probs = torch.randn(50, 1000, 10)
    result = summarize(probs, "classification", "batched")
    text = repr(result)
    assert "\n" not in text
    assert len(text) < 300  # no tensor dumps, whatever N and T
    assert text.startswith("MCResult(classification, T=50, N=1000, samples=(50, 1000, 10)")
    mi = result.mutual_information
    assert f"mutual_information mean={mi.mean():.4g} max={mi.max():.4g}" in text
    assert "strategy='batched'" in text
    regression = summarize(torch.randn(4, 3, 2), "regression", "loop", tau=2.0,
                           targets=torch.zeros(3, 2))  # fmt: skip
    text = repr(regression)
    assert "regression, T=4, N=3" in text
    assert f"variance mean={regression.variance.mean():.4g}" in text
    assert f"log_likelihood={float(regression.log_likelihood):.4g}" in text
