"""dropkit.metrics calibration: ECE by hand (edges 0 and 1 included), against scikit-learn's
calibration_curve, statistically on calibrated data, and the reliability-diagram plot."""

from __future__ import annotations

import io
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from dropkit.metrics import (
    ReliabilityDiagram,
    expected_calibration_error,
    plot_reliability_diagram,
    reliability_diagram,
)
from tests.stats import assert_within


# -- hand-computed cases -----------------------------------------------------------------------
def test_top_label_ece_by_hand_with_confidence_one_and_an_edge() -> None:
    probs = [
        [1.0, 0.0, 0.0],  # conf 1.0 -> last bin (0.75, 1], correct
        [0.5, 0.25, 0.25],  # conf 0.5 exactly on an edge -> bin (0.25, 0.5], wrong
        [0.1, 0.8, 0.1],  # conf 0.8 -> last bin, wrong
        [0.3, 0.3, 0.4],  # conf 0.4 -> bin (0.25, 0.5], correct
        [0.2, 0.2, 0.6],  # conf 0.6 -> bin (0.5, 0.75], correct
    ]
    labels = [0, 2, 0, 2, 2]
    d = reliability_diagram(probs, labels, n_bins=4)
    assert d.edges.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert d.counts.tolist() == [0, 2, 1, 2]
    np.testing.assert_allclose(d.confidence[1:], [0.45, 0.6, 0.9], rtol=1e-15)
    assert d.accuracy[1:].tolist() == [0.5, 1.0, 0.5]
    assert np.isnan(d.confidence[0])  # empty bin
    assert np.isnan(d.accuracy[0])
    expected = (2 * 0.05 + 1 * 0.4 + 2 * 0.4) / 5
    assert expected_calibration_error(probs, labels, n_bins=4) == pytest.approx(expected, 1e-14)


def test_binary_ece_by_hand_with_confidences_zero_and_one() -> None:
    # 0.0 and 0.25 share the first bin [0, 0.25]; 1.0 is in the last one [0.75, 1].
    d = reliability_diagram([0.0, 0.25, 0.6, 1.0], [0, 1, 1, 1], n_bins=4)
    assert d.kind == "binary"
    assert d.counts.tolist() == [2, 0, 1, 1]
    ece = expected_calibration_error([0.0, 0.25, 0.6, 1.0], [0, 1, 1, 1], n_bins=4)
    assert ece == pytest.approx((2 * 0.375 + 1 * 0.4 + 1 * 0.0) / 4, rel=1e-14)


@pytest.mark.parametrize("n_bins", [10, 15])
def test_torchmetrics_3510_confidence_one_is_in_the_last_bin(n_bins: int) -> None:
    # torchmetrics counted 1.0 in a phantom (n_bins + 1)-th bin and returned 0.525.
    preds, target = torch.tensor([0.95, 1.0], dtype=torch.float64), torch.tensor([1, 0])
    assert reliability_diagram(preds, target, n_bins).counts[-1] == 2
    assert expected_calibration_error(preds, target, n_bins) == pytest.approx(0.475, rel=1e-12)


def test_torchmetrics_1646_confidence_zero_is_in_the_first_bin() -> None:
    # torchmetrics raised "index -1 is out of bounds" here.
    ece = expected_calibration_error([1.0, 1.0, 1.0, 1.0, 0.0], [0, 0, 1, 1, 1], n_bins=2)
    assert ece == pytest.approx(1 / 5 * 1.0 + 4 / 5 * 0.5, rel=1e-14)


def test_one_bin_is_the_gap_between_mean_confidence_and_accuracy() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    ece = expected_calibration_error(probs, [0, 0, 0], n_bins=1)
    assert ece == pytest.approx(abs(2 / 3 - 0.8), rel=1e-14)


# -- oracles ---------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_binary_bins_match_sklearn_calibration_curve(strategy: str) -> None:
    calibration_curve = pytest.importorskip("sklearn.calibration").calibration_curve
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.random(997), [0.0, 1.0, 0.5]])
    y = (rng.random(p.size) < p**2).astype(np.int64)  # miscalibrated on purpose
    d = reliability_diagram(p, y, n_bins=7, strategy=strategy)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=7, strategy=strategy)
    full = d.counts > 0
    np.testing.assert_allclose(d.accuracy[full], prob_true, rtol=1e-12)
    np.testing.assert_allclose(d.confidence[full], prob_pred, rtol=1e-12)
    assert d.counts.sum() == p.size


def test_quantile_bins_hold_equal_mass() -> None:
    conf = np.random.default_rng(1).random(3000)
    d = reliability_diagram(conf, np.zeros(3000, np.int64), n_bins=6, strategy="quantile")
    assert d.counts.tolist() == [500] * 6


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("kind", ["top-label", "binary"])
def test_ece_of_calibrated_data_is_only_sampling_noise(kind: str, strategy: str) -> None:
    # Labels drawn from the stated probabilities: P(hit | conf) = conf in both forms. Given the
    # confidences, bin b's accuracy gap is ~ N(0, sd_b²), sd_b² = Σ_{i in b} c_i(1 - c_i) / n_b²,
    # so ECE = Σ_b w_b |gap_b| (w_b = n_b/n) has mean Σ_b w_b sd_b sqrt(2/π) and variance
    # Σ_b w_b² sd_b² (1 - 2/π) (half-normal moments; bins are independent given the c_i).
    rng = np.random.default_rng(2)
    n, n_bins = 100_000, 15
    if kind == "binary":
        probs = conf = rng.random(n)
        labels = (rng.random(n) < probs).astype(np.int64)
    else:
        probs = rng.dirichlet([0.3, 0.3, 0.3, 0.3], size=n)
        labels = (rng.random((n, 1)) > probs.cumsum(axis=1)).sum(axis=1)
        conf = probs.max(axis=1)
    d = reliability_diagram(probs, labels, n_bins, strategy=strategy)
    index = np.searchsorted(d.edges[1:-1], conf)
    var = np.bincount(index, conf * (1 - conf), n_bins)[d.counts > 0] / d.counts[d.counts > 0] ** 2
    weight = d.counts[d.counts > 0] / n
    mean = np.sum(weight * np.sqrt(var)) * math.sqrt(2 / math.pi)
    sd = math.sqrt(np.sum(weight**2 * var) * (1 - 2 / math.pi))
    assert_within(d.ece, mean, sd, f"ECE of calibrated {kind} data")
    assert d.ece < 0.01


def test_ece_of_an_overconfident_model_is_large() -> None:
    rng = np.random.default_rng(3)
    p = rng.random(20_000)
    labels = (rng.random(p.size) < p).astype(np.int64)
    sharpened = np.clip(2 * p - 0.5, 0.0, 1.0)  # pushed towards 0 and 1
    assert expected_calibration_error(sharpened, labels) > 0.1


def test_torch_and_numpy_inputs_agree() -> None:
    logits = torch.randn(200, 5, generator=torch.Generator().manual_seed(0))
    probs, labels = logits.softmax(dim=1), torch.randint(0, 5, (200,))
    as_numpy = expected_calibration_error(probs.double().numpy(), labels.numpy())
    assert expected_calibration_error(probs, labels) == pytest.approx(as_numpy, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"probs": [[0.6, 0.6]]}, r"probs.*sum to 1.*1\.2"),
        ({"probs": [[1.5, -0.5]]}, r"probs must be non-negative"),
        ({"probs": [1.5]}, r"binary probs.*\[0, 1\].*1\.5"),
        ({"probs": [[[1.0]]]}, r"probs must have shape \(N, K\)"),
        ({"probs": [[np.nan, 1.0]]}, r"probs must be finite"),
        ({"labels": [2]}, r"labels must lie in \[0, 2\).*got 2"),
        ({"labels": [0.0]}, r"labels must be integer"),
        ({"labels": [0, 1]}, r"same number of samples.*probs has 1, labels has 2"),
        ({"n_bins": 0}, r"n_bins must be an integer >= 1, got n_bins=0"),
        ({"n_bins": True}, r"n_bins must be an integer >= 1, got n_bins=True"),
        ({"strategy": "equal"}, r"strategy must be one of .*got 'equal'"),
    ],
)
def test_bad_inputs_are_rejected_with_the_argument_named(kwargs: dict, match: str) -> None:
    args = {"probs": [[0.3, 0.7]], "labels": [1], "n_bins": 15, "strategy": "uniform"} | kwargs
    strategy = args.pop("strategy")
    with pytest.raises(ValueError, match=match):
        expected_calibration_error(**args, strategy=strategy)


# -- plot ------------------------------------------------------------------------------------
def test_plot_draws_one_bar_and_one_gap_per_bin_and_saves() -> None:
    matplotlib_figure = pytest.importorskip("matplotlib.figure")
    rng = np.random.default_rng(4)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=500)
    labels = rng.integers(0, 3, 500)
    fig = plot_reliability_diagram(probs, labels, n_bins=10)
    assert isinstance(fig, matplotlib_figure.Figure)
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * 10
    assert ax.get_title().startswith(f"ECE = {expected_calibration_error(probs, labels, 10):.4f}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue()[:4] == b"\x89PNG"


def test_plot_into_given_axes_and_from_a_diagram() -> None:
    matplotlib_figure = pytest.importorskip("matplotlib.figure")
    fig = matplotlib_figure.Figure()
    ax = fig.add_subplot()
    data = reliability_diagram([0.1, 0.9], [0, 1], n_bins=5, strategy="quantile")
    assert isinstance(data, ReliabilityDiagram)
    assert plot_reliability_diagram(data, ax=ax) is fig
    assert ax.get_ylabel() == "fraction of positives"
    with pytest.raises(ValueError, match="labels must be None"):
        plot_reliability_diagram(data, [0, 1])
    with pytest.raises(ValueError, match="labels are required"):
        plot_reliability_diagram([[0.5, 0.5]])


def test_matplotlib_is_imported_only_by_the_plot_and_pyplot_never() -> None:
    pytest.importorskip("matplotlib")
    code = (
        "import sys\n"
        "import dropkit.metrics as m\n"
        "assert 'matplotlib' not in sys.modules, 'imported at import time'\n"
        "m.plot_reliability_diagram([[0.8, 0.2]], [0])\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
