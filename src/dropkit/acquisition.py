"""Bayesian active learning: uncertainty scores and batch acquisition from MC dropout samples.

Layout: ``probs`` has shape (T, N, K) = (MC samples, pool points, classes): ``probs[t, n]`` is
the softmax output (probabilities, not logits) for pool point n under the t-th dropout mask;
baal's (N, K, T) layout is ``probs.permute(2, 0, 1)``. :func:`batch_bald` also needs the masks
to be *consistent*: the same T masks for every pool point (Kirsch et al. 2019), otherwise its
joint entropies mix unrelated samples; the single-point scores do not care.

Scores (all (N,) float64 arrays, higher = acquire first; entropies in nats, 0·log 0 = 0):

* :func:`predictive_entropy` ``H[p̄]`` with ``p̄ = (1/T) Σ_t p_t`` (``max_entropy``)
* :func:`expected_entropy` ``(1/T) Σ_t H[p_t]``
* :func:`mutual_information` (BALD) ``H[p̄] − (1/T) Σ_t H[p_t]``
* :func:`variation_ratio` ``1 − f_mode / T``; :func:`mean_std` ``(1/K) Σ_k std_t p_tk``

:func:`acquire` picks the top-k points by one of them, or a BatchBALD batch.

Example:
    >>> import numpy as np
    >>> probs = np.array([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]])  # (T=2, N=2, K=2)
    >>> mutual_information(probs).round(6).tolist()  # point 0: the samples disagree
    [0.693147, 0.0]
    >>> acquire(probs, 1, "bald").indices.tolist()
    [0]
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from dropkit.metrics._checks import check_positive_int, check_probs

__all__ = ["Acquisition", "acquire", "batch_bald", "expected_entropy", "max_entropy"]
__all__ += ["mean_std", "mutual_information", "predictive_entropy", "variation_ratio"]

LAYOUT = "(T, N, K) = (MC samples, pool points, classes)"
METHODS = ("bald", "entropy", "max_entropy", "variation_ratio", "mean_std", "batchbald")
# Floats per chunk of the (configurations, pool points, classes) joint table: ~128 MiB.
CHUNK_FLOATS = 2**24


def _xlogx(x: np.ndarray) -> np.ndarray:
    """x log x elementwise with 0 log 0 = 0 (the limit), without a scipy import."""
    return x * np.log(np.where(x > 0, x, 1.0))


def _probs(probs: object, owner: str) -> np.ndarray:
    return check_probs(probs, owner, LAYOUT, 3)


def _entropy(p: np.ndarray) -> np.ndarray:
    """Entropy over the last axis, −Σ x log x with 0 log 0 = 0."""
    return -_xlogx(p).sum(axis=-1)


def predictive_entropy(probs: object) -> np.ndarray:
    """Entropy of the mean prediction ``H[p̄_n] = −Σ_k p̄_nk log p̄_nk``, ``p̄_n = (1/T) Σ_t p_tn``
    (Gal, Islam & Ghahramani 2017, arXiv:1703.02910, "Max Entropy"). Total uncertainty: it is
    high for aleatoric noise as well as for model disagreement. Shape: (T, N, K) -> (N,).

    Not the mean of the per-sample entropies: that is :func:`expected_entropy`.
    """
    return _entropy(_probs(probs, "predictive_entropy").mean(axis=0))


def max_entropy(probs: object) -> np.ndarray:
    """The "Max Entropy" acquisition score: :func:`predictive_entropy`. (T, N, K) -> (N,)."""
    return predictive_entropy(probs)


def expected_entropy(probs: object) -> np.ndarray:
    """Mean of the per-sample entropies ``(1/T) Σ_t H[p_tn]``: the aleatoric part of the
    predictive entropy, ``E_w H[y | x, w]`` (Houlsby et al. 2011). Shape: (T, N, K) -> (N,)."""
    return _entropy(_probs(probs, "expected_entropy")).mean(axis=0)


def mutual_information(probs: object) -> np.ndarray:
    """BALD score ``I[y; w | x] = H[p̄_n] − (1/T) Σ_t H[p_tn]`` (Houlsby, Huszár, Ghahramani &
    Lengyel 2011, arXiv:1112.5745; Gal, Islam & Ghahramani 2017, arXiv:1703.02910).

    High only where the MC samples disagree (epistemic uncertainty); 0 when all T samples are
    equal, at most ``log K``. It is >= 0 by Jensen's inequality; values that rounding makes
    slightly negative are clamped to 0. Shape: (T, N, K) -> (N,).
    """
    return _bald(_probs(probs, "mutual_information"))[0]


def _bald(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(BALD scores, expected entropies) of checked (T, N, K) probs, shared with BatchBALD."""
    expected = _entropy(p).mean(axis=0)
    return np.maximum(_entropy(p.mean(axis=0)) - expected, 0.0), expected


def variation_ratio(probs: object) -> np.ndarray:
    """Variation ratio ``1 − f_mode / T`` (Freeman 1965; Gal et al. 2017), where ``f_mode`` is
    how many of the T samples predict the modal class ``argmax_k p_tnk`` (argmax ties go to
    the lowest class index). 0 when all samples agree, at most ``1 − 1/K``.
    Shape: (T, N, K) -> (N,).
    """
    p = _probs(probs, "variation_ratio")
    votes = p.argmax(axis=2)  # (T, N)
    counts = (votes[..., None] == np.arange(p.shape[2])).sum(axis=0)  # (N, K)
    return 1.0 - counts.max(axis=1) / p.shape[0]


def mean_std(probs: object) -> np.ndarray:
    """Mean standard deviation ``(1/K) Σ_k sqrt((1/T) Σ_t (p_tnk − p̄_nk)²)`` of the class
    probabilities over the MC samples (population std, ddof = 0; Kampffmeyer et al. 2016,
    Gal et al. 2017). Shape: (T, N, K) -> (N,).
    """
    return _probs(probs, "mean_std").std(axis=0).mean(axis=1)


@dataclass(frozen=True, eq=False)
class Acquisition:
    """The result of :func:`acquire` / :func:`batch_bald`.

    Attributes:
        indices: (k,) int64 pool indices in the order chosen (by descending score for top-k).
        scores: (N,) the method's single-point score of every pool point (BALD for batchbald).
        batch_scores: (k,) ``scores[indices]`` for top-k methods; for batchbald the joint
            mutual information ``I[y_1..y_i; w]`` of the first i chosen points (i = 1..k).
        method: the method name.
    """

    indices: np.ndarray
    scores: np.ndarray
    batch_scores: np.ndarray
    method: str


def acquire(
    probs: object,
    k: int,
    method: str = "bald",
    *,
    num_samples_batchbald: int | None = None,
    seed: int = 0,
) -> Acquisition:
    """Choose ``k`` pool points to label from MC samples ``probs`` of shape (T, N, K).

    ``method``: ``"bald"`` (:func:`mutual_information`), ``"entropy"`` or ``"max_entropy"``
    (:func:`predictive_entropy`), ``"variation_ratio"``, ``"mean_std"``: the k highest scores
    (ties: lower index first); ``"batchbald"``: :func:`batch_bald` with
    ``num_configurations=num_samples_batchbald`` and ``seed``. Top-k BALD can fill a batch
    with near-duplicates that each look informative; BatchBALD scores the batch jointly.
    """
    owner = "acquire"
    if method not in METHODS:
        raise ValueError(f"{owner}: method must be one of {METHODS}, got {method!r}")
    if method == "batchbald":
        return batch_bald(probs, k, num_configurations=num_samples_batchbald, seed=seed)
    score = {
        "bald": mutual_information,
        "entropy": predictive_entropy,
        "max_entropy": predictive_entropy,
        "variation_ratio": variation_ratio,
        "mean_std": mean_std,
    }[method]
    scores = score(_probs(probs, owner))
    k = _check_k(k, len(scores), owner)
    indices = np.argsort(-scores, kind="stable")[:k]
    return Acquisition(indices, scores, scores[indices], method)


def _check_k(k: object, pool_size: int, owner: str) -> int:
    k = check_positive_int(k, "k", owner)
    if k > pool_size:
        raise ValueError(f"{owner}: k must be at most the pool size N = {pool_size}, got {k}")
    return k


def _joint_entropy(
    weights: np.ndarray, shift: np.ndarray, scale: np.ndarray, p: np.ndarray
) -> np.ndarray:
    """``Σ_c scale_c · (−Σ_y [Q log Q + shift_c Q])`` with ``Q[c, n, y] = (1/T) Σ_t weights[t, c]
    p_tny``, for every pool point n: (T, C), (C,), (C,), (T, N, K) -> (N,).

    ``weights[t, c]·exp(shift_c) = p(y_S = c | w_t)`` for C configurations c of the chosen set
    S, so ``p(y_S = c, y_n = y) = exp(shift_c) Q``. Exact (all K^|S| configurations,
    shift = 0, scale = 1) this is ``H[y_S, y_n]``. For M configurations sampled from p(y_S)
    (Kirsch et al. 2019, §3.3), ``scale_c = 1 / (M Z_c)`` with ``Z_c = (1/T) Σ_t weights[t, c]``
    makes it the unbiased estimate ``mean_c −Σ_y p(y | c) log p(c, y)``.
    """
    T, N, K = p.shape
    flat = p.reshape(T, N * K)
    out = np.empty(N)
    step = max(1, CHUNK_FLOATS // (weights.shape[1] * K))  # chunk the pool to bound memory
    for start in range(0, N, step):
        q = (weights.T @ flat[:, start * K : (start + step) * K] / T).reshape(len(shift), -1, K)
        per_config = _xlogx(q).sum(axis=2) + shift[:, None] * q.sum(axis=2)  # (C, chunk)
        out[start : start + step] = -(scale @ per_config)
    return out


def _sample_configurations(
    p_chosen: np.ndarray, num: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``num`` configurations of the chosen points' labels from p(y_S) = E_w Π_i p(y_i|w):
    a mask t uniformly, then each y_i ~ p_t(y_i). ``p_chosen``: (T, |S|, K). Returns
    (weights, shift, scale) for :func:`_joint_entropy`, with the product kept in log space
    (shifted by its maximum over t) so that large batches do not underflow."""
    T, S, _ = p_chosen.shape
    t = rng.integers(T, size=num)
    cdf = np.cumsum(p_chosen[t], axis=2)  # (num, S, K)
    u = rng.random((num, S, 1)) * cdf[:, :, -1:]  # below the total, so a class of prob > 0
    labels = (cdf < u).sum(axis=2)  # (num, S)
    with np.errstate(divide="ignore"):  # log 0 = -inf: that mask cannot produce the labels
        log_w = np.log(p_chosen[:, np.arange(S), labels]).sum(axis=2)  # (T, num)
    shift = log_w.max(axis=0)  # finite: mask t[m] produced configuration m
    weights = np.exp(log_w - shift)
    return weights, shift, 1.0 / (num * weights.mean(axis=0))


def batch_bald(
    probs: object, k: int, *, num_configurations: int | None = None, seed: int = 0
) -> Acquisition:
    """Greedy BatchBALD (Kirsch, van Amersfoort & Gal 2019, arXiv:1906.08158).

    Picks points one at a time, each maximising the joint mutual information of the batch
    ``I[y_1..y_i; w] = H[y_1..y_i] − Σ_j (1/T) Σ_t H[p_t(y_j)]`` (the second term is additive
    because the labels are independent given the mask). The joint entropy needs the same T
    masks for every pool point (consistent MC dropout; see the module docstring). It is exact
    while the chosen set S has ``K^|S| <= num_configurations`` label configurations; beyond
    that it is a Monte Carlo estimate from ``num_configurations`` configurations sampled from
    p(y_S), fresh at each step (seeded by ``seed``), so ties and near-ties between candidates
    may then be broken by sampling noise. The first pick is BALD's argmax. Cost per step:
    O(T·C·N·K) with C = min(K^|S|, num_configurations) (default 10 000; lower it to trade
    accuracy of the joint entropy for speed on large pools).

    Shape:
        probs (T, N, K). Returns an :class:`Acquisition` whose ``batch_scores[i]`` is the joint
        MI of the first i + 1 picks (non-decreasing up to estimation noise).
    """
    owner = "batch_bald"
    p = _probs(probs, owner)
    T, N, K = p.shape
    k = _check_k(k, N, owner)
    bound = 10_000 if num_configurations is None else num_configurations
    bound = check_positive_int(bound, "num_configurations", owner)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"{owner}: seed must be an integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))

    bald, cond = _bald(p)  # cond: (N,) E_w H[y_n | w], additive over the batch
    chosen = [int(np.argmax(bald))]
    values = [bald[chosen[0]]]
    # exact p(y_S = c | w_t) for every configuration c of S while there are at most `bound`
    weights = p[:, chosen[0], :] if bound >= K else None  # (T, K^|S|)
    while len(chosen) < k:
        if weights is not None:
            ones = np.ones(weights.shape[1])
            joint = _joint_entropy(weights, np.zeros_like(ones), ones, p)
        else:
            joint = _joint_entropy(*_sample_configurations(p[:, chosen], bound, rng), p)
        gain = joint - (cond[chosen].sum() + cond)
        gain[chosen] = -np.inf
        best = int(np.argmax(gain))
        chosen.append(best)
        values.append(gain[best])
        if weights is not None and weights.shape[1] * K <= bound:
            # configurations (c, y) of S + {best}; checked first so the table never outgrows it
            weights = (weights[:, :, None] * p[:, best, None, :]).reshape(T, -1)
        else:
            weights = None  # from here on every step samples
    return Acquisition(np.array(chosen, np.int64), bald, np.array(values), "batchbald")
