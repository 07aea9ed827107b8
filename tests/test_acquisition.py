"""dropkit.acquisition: entropy/MI identities, hand cases, top-k acquisition, and BatchBALD
against brute-force enumeration of the joint label distribution."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import entr

from dropkit.acquisition import (
    acquire,
    batch_bald,
    expected_entropy,
    max_entropy,
    mean_std,
    mutual_information,
    predictive_entropy,
    variation_ratio,
)
from tests.stats import assert_within


def mc_probs(seed: int, t: int = 8, n: int = 50, k: int = 4, alpha: float = 0.5) -> np.ndarray:
    """(T, N, K) MC probabilities whose samples disagree (Dirichlet rows)."""
    return np.random.default_rng(seed).dirichlet(np.full(k, alpha), size=(t, n))


def brute_force_joint_mi(p: np.ndarray, chosen: list[int]) -> float:
    """I[y_S; w] = H[y_S] − Σ_i E_t H[p_t(y_i)] with H[y_S] summed over all K^|S| labelings."""
    joint = 0.0
    for labels in itertools.product(range(p.shape[2]), repeat=len(chosen)):
        joint += entr(np.mean(np.prod(p[:, chosen, labels], axis=1)))
    return joint - sum(entr(p[:, i]).sum(axis=1).mean() for i in chosen)


# -- the single-point scores -----------------------------------------------------------------
def test_entropy_identities_on_random_samples() -> None:
    p = mc_probs(0)
    pe, ee, mi = predictive_entropy(p), expected_entropy(p), mutual_information(p)
    np.testing.assert_allclose(mi, pe - ee, rtol=0, atol=1e-12)
    assert np.all(mi > 0)
    assert np.all(mi <= pe)
    assert np.all(ee >= 0)
    assert np.all(pe <= math.log(4) + 1e-12)
    np.testing.assert_array_equal(max_entropy(p), pe)


def test_predictive_entropy_is_of_the_mean_not_the_mean_of_entropies() -> None:
    # Two confident samples that disagree: the mean [0.5, 0.5] has entropy log 2; each sample 0.
    p = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert predictive_entropy(p)[0] == pytest.approx(math.log(2), rel=1e-15)
    assert expected_entropy(p)[0] == 0.0  # 0 log 0 = 0, no NaN
    assert mutual_information(p)[0] == pytest.approx(math.log(2), rel=1e-15)


def test_entropies_by_hand() -> None:
    p = np.array([[[0.5, 0.5, 0.0]], [[0.1, 0.3, 0.6]]])  # (T=2, N=1, K=3)
    mean = np.array([0.3, 0.4, 0.3])
    h = lambda q: -sum(x * math.log(x) for x in q if x > 0)  # noqa: E731
    assert predictive_entropy(p)[0] == pytest.approx(h(mean), rel=1e-14)
    assert expected_entropy(p)[0] == pytest.approx((h(p[0, 0]) + h(p[1, 0])) / 2, rel=1e-14)


def test_mutual_information_is_zero_when_all_samples_agree() -> None:
    one = mc_probs(1, t=1, n=30)
    p = np.repeat(one, 10, axis=0)  # T = 10 identical samples
    difference = predictive_entropy(p) - expected_entropy(p)
    assert difference.min() < 0  # rounding: H[mean] - mean H is a few ulp either side of 0
    mi = mutual_information(p)
    assert mi.min() >= 0.0  # clamped, never a rounding negative
    assert mi.max() < 1e-15


@pytest.mark.parametrize("k", [2, 3, 10])
def test_mutual_information_is_log_k_for_k_one_hot_disagreeing_samples(k: int) -> None:
    p = np.eye(k)[:, None, :]  # sample t predicts class t with certainty: (T=K, N=1, K)
    assert mutual_information(p)[0] == pytest.approx(math.log(k), rel=1e-14)
    assert variation_ratio(p)[0] == pytest.approx(1 - 1 / k, rel=1e-15)


def test_variation_ratio_by_hand() -> None:
    eye = np.eye(3)
    votes = [[0, 0, 1, 2], [1, 1, 1, 1], [2, 2, 0, 0]]  # per point, the argmax of each sample
    p = np.stack([eye[list(v)] for v in votes], axis=1)  # (T=4, N=3, K=3)
    assert variation_ratio(p).tolist() == [0.5, 0.0, 0.5]
    # an argmax tie inside a sample goes to the lower class: [0.5, 0.5] votes for class 0
    tie = np.array([[[0.5, 0.5]], [[0.2, 0.8]], [[0.9, 0.1]]])
    assert variation_ratio(tie)[0] == pytest.approx(1 / 3)


def test_mean_std_by_hand() -> None:
    p = np.array([[[0.8, 0.2]], [[0.4, 0.6]]])  # std over T of each class: 0.2
    assert mean_std(p)[0] == pytest.approx(0.2, rel=1e-14)
    assert mean_std(np.repeat(p[:1], 5, axis=0))[0] == 0.0


def test_torch_input_matches_numpy() -> None:
    p = mc_probs(2)
    as_torch = torch.tensor(p, dtype=torch.float32)
    for score in (predictive_entropy, expected_entropy, mutual_information, mean_std):
        np.testing.assert_allclose(score(as_torch), score(p), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(variation_ratio(as_torch), variation_ratio(p))


# -- top-k acquisition -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "score"),
    [
        ("bald", mutual_information),
        ("entropy", predictive_entropy),
        ("max_entropy", predictive_entropy),
        ("variation_ratio", variation_ratio),
        ("mean_std", mean_std),
    ],
)
def test_acquire_returns_the_top_k_in_descending_order(method: str, score) -> None:
    p = mc_probs(3)
    result = acquire(p, 5, method)
    scores = score(p)
    assert result.method == method
    np.testing.assert_array_equal(result.scores, scores)
    np.testing.assert_array_equal(result.batch_scores, scores[result.indices])
    assert np.all(np.diff(result.batch_scores) <= 0)
    assert result.batch_scores[-1] >= np.delete(scores, result.indices).max()


def test_acquire_breaks_ties_by_lower_index() -> None:
    p = np.repeat(np.array([[[1.0, 0.0]], [[0.0, 1.0]]]), 4, axis=1)  # 4 identical points
    assert acquire(p, 3, "variation_ratio").indices.tolist() == [0, 1, 2]


# -- BatchBALD ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_batch_bald_with_k_one_is_bald_argmax(seed: int) -> None:
    p = mc_probs(seed, n=200)
    result = batch_bald(p, 1)
    assert result.indices.tolist() == [int(np.argmax(mutual_information(p)))]
    assert result.batch_scores[0] == mutual_information(p).max()


def test_batch_bald_is_greedy_on_the_exact_joint_mutual_information() -> None:
    p = mc_probs(4, t=5, n=7, k=3)
    result = batch_bald(p, 4)
    chosen: list[int] = []
    for _ in range(4):  # the greedy rule, with every joint entropy enumerated by brute force
        rest = [n for n in range(7) if n not in chosen]
        chosen.append(max(rest, key=lambda n: brute_force_joint_mi(p, [*chosen, n])))
    assert result.indices.tolist() == chosen
    exact = [brute_force_joint_mi(p, chosen[: i + 1]) for i in range(4)]
    np.testing.assert_allclose(result.batch_scores, exact, rtol=1e-12)
    assert np.all(np.diff(result.batch_scores) > 0)


def duplicate_pool() -> np.ndarray:
    """The BatchBALD paper's motivating case: point 0 is maximally informative and point 1 is
    an exact copy; point 2 is less informative on its own but tells apart different masks."""
    p1 = np.array(
        [
            [1.0, 1.0, 0.0, 0.0],  # point 0: P(y = 1 | w_t); splits masks {0, 1} | {2, 3}
            [1.0, 1.0, 0.0, 0.0],  # point 1: a duplicate of point 0
            [0.9, 0.1, 0.9, 0.1],  # point 2: splits masks {0, 2} | {1, 3}, noisily
            [0.5, 0.5, 0.5, 0.5],  # points 3, 4: pure noise, MI 0
            [0.6, 0.6, 0.6, 0.6],
        ]
    ).T  # (T=4, N=5)
    return np.stack([1 - p1, p1], axis=2)


@pytest.mark.parametrize("num_configurations", [None, 1])  # exact; sampled after the 1st pick
def test_batch_bald_skips_the_duplicate_that_top_k_bald_takes(num_configurations) -> None:
    p = duplicate_pool()
    assert acquire(p, 2, "bald").indices.tolist() == [0, 1]
    result = acquire(p, 2, "batchbald", num_samples_batchbald=num_configurations)
    assert result.indices.tolist() == [0, 2]
    h09 = float(entr(0.9) + entr(0.1))
    # I[y0; w] = log 2; I[y0, y2; w] = H[y0, y2] − H(0.9) = 2 log 2 − H(0.9); the copy adds 0
    expected = [math.log(2), 2 * math.log(2) - h09]
    # (a symmetric pool: even one sampled configuration gives the exact value)
    np.testing.assert_allclose(result.batch_scores, expected, rtol=1e-12)
    assert brute_force_joint_mi(p, [0, 1]) == pytest.approx(math.log(2), rel=1e-12)


def test_sampled_joint_entropy_is_unbiased() -> None:
    # With k = N the last pick has one candidate, so its value is the Monte Carlo estimate of
    # I[y_1..y_N; w] (3 labels known exactly: 3^2 = 9 configurations, the 4th sampled, M = 9).
    p = mc_probs(5, t=6, n=4, k=3)
    exact = brute_force_joint_mi(p, [0, 1, 2, 3])
    runs = np.array(
        [batch_bald(p, 4, num_configurations=9, seed=s).batch_scores for s in range(400)]
    )
    assert np.all(runs[:, :3] == runs[0, :3])  # the exact steps do not depend on the seed
    last = runs[:, 3]
    assert last.std() > 0  # the last step did sample
    assert_within(last.mean(), exact, last.std() / math.sqrt(len(last)), "sampled joint MI")
    assert batch_bald(p, 4, num_configurations=9, seed=7).batch_scores[3] == runs[7, 3]


def test_batch_bald_large_batches_stay_finite() -> None:
    # Products of ~60 probabilities per configuration would underflow without the log shift.
    p = mc_probs(6, t=10, n=150, k=10, alpha=0.05)
    result = batch_bald(p, 60, num_configurations=200)
    assert np.all(np.isfinite(result.batch_scores))
    assert len(set(result.indices.tolist())) == 60


# -- bad inputs --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: predictive_entropy(np.full((4, 3), 1 / 3)), r"probs must have shape \(T, N, K\)"),
        (lambda: mutual_information(np.ones((2, 3, 2))), r"probs.*sum to 1.*got a sum of 2"),
        (lambda: variation_ratio(-np.ones((1, 1, 1))), r"probs must be non-negative"),
        (lambda: acquire(mc_probs(0), 2, "random"), r"method must be one of .*got 'random'"),
        (lambda: acquire(mc_probs(0), 0), r"k must be an integer >= 1, got k=0"),
        (lambda: acquire(mc_probs(0), 51), r"k must be at most the pool size N = 50, got 51"),
        (lambda: batch_bald(mc_probs(0), 2, num_configurations=0), r"num_configurations must"),
        (lambda: batch_bald(mc_probs(0), 2, seed=0.5), r"seed must be an integer, got 0.5"),
    ],
)
def test_bad_inputs_are_rejected_with_the_argument_named(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
