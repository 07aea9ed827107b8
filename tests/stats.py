"""Confidence bounds for the statistical tests.

Every stochastic property is asserted inside a 6-sigma interval: for a correct implementation a
single check fails with probability below 2e-9 (normal approximation), so a failure means a bug,
not bad luck. Seeds are fixed as well, so the suite is deterministic.
"""

from __future__ import annotations

import math

SIGMAS = 6.0


def assert_binomial(successes: int, trials: int, prob: float, what: str = "count") -> None:
    """``successes ~ Binomial(trials, prob)`` must lie within 6 standard deviations of its mean."""
    mean = trials * prob
    sd = math.sqrt(trials * prob * (1.0 - prob))
    assert abs(successes - mean) <= SIGMAS * sd + 1e-9, (
        f"{what}: {successes} of {trials}, expected {mean:.1f} +- {SIGMAS:g} * {sd:.2f}"
    )


def assert_within(observed: float, expected: float, sd: float, what: str = "value") -> None:
    """``observed`` must lie within 6 ``sd`` of ``expected`` (``sd``: the estimator's std)."""
    assert abs(observed - expected) <= SIGMAS * sd, (
        f"{what}: {observed:.6g}, expected {expected:.6g} +- {SIGMAS:g} * {sd:.3g}"
    )
