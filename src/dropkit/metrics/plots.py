"""Reliability-diagram plot (matplotlib is imported only when a plot is asked for).

The figure is a :class:`matplotlib.figure.Figure` made directly, never through ``pyplot``: no
global figure state, no GUI backend, nothing left open; save it with ``fig.savefig(path)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dropkit.metrics._optional import require
from dropkit.metrics.calibration import STRATEGIES, ReliabilityDiagram, reliability_diagram

if TYPE_CHECKING:  # only for the annotations; importing matplotlib at runtime is deferred
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_reliability_diagram"]


def plot_reliability_diagram(
    data_or_probs: ReliabilityDiagram | Any,
    labels: object = None,
    ax: Axes | None = None,
    *,
    n_bins: int = 15,
    strategy: str = "uniform",
) -> Figure:
    """Draw a reliability diagram: per-bin accuracy bars, the gap to the mean confidence, and
    the diagonal of perfect calibration; the title gives the ECE (Guo et al. 2017, Fig. 1).

    Args:
        data_or_probs: a :class:`ReliabilityDiagram`, or probs of shape (N, K) or (N,)
            together with ``labels`` (then binned with ``n_bins`` and ``strategy``).
        labels: (N,) integer classes; required with probs, must be None with a diagram.
        ax: axes to draw into; None creates a new ``Figure`` with one axes.

    Returns:
        The figure holding the axes (``ax.figure`` when ``ax`` is given).

    Example:
        >>> fig = plot_reliability_diagram([[0.8, 0.2], [0.3, 0.7]], [0, 0], n_bins=5)
        >>> fig.axes[0].get_title()  # one bin (0.6, 0.8]: |acc 1/2 - conf 0.75|
        'ECE = 0.2500 (2 samples)'
    """
    owner = "plot_reliability_diagram"
    if isinstance(data_or_probs, ReliabilityDiagram):
        if labels is not None:
            raise ValueError(f"{owner}: labels must be None when given a ReliabilityDiagram")
        data = data_or_probs
    else:
        if labels is None:
            raise ValueError(f"{owner}: labels are required when data_or_probs holds probs")
        if strategy not in STRATEGIES:
            raise ValueError(f"{owner}: strategy must be one of {STRATEGIES}, got {strategy!r}")
        data = reliability_diagram(data_or_probs, labels, n_bins, strategy=strategy)

    if ax is None:
        # deferred: metrics must import without matplotlib
        figure = require("matplotlib.figure", "plot_reliability_diagram")
        fig = figure.Figure(figsize=(4.5, 4.5), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure

    left, widths = data.edges[:-1], np.diff(data.edges)
    full = data.counts > 0
    accuracy = np.where(full, data.accuracy, 0.0)
    ax.bar(left, accuracy, width=widths, align="edge", edgecolor="black", label="accuracy")
    # The gap bar spans accuracy -> confidence: above the bar = over-confident, inside = under.
    gap = np.where(full, data.confidence - accuracy, 0.0)
    ax.bar(
        left,
        gap,
        bottom=accuracy,
        width=widths,
        align="edge",
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        hatch="//",
        label="gap to confidence",
    )
    ax.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="gray", label="perfect calibration")
    binary = data.kind == "binary"
    ax.set_xlabel("predicted probability of class 1" if binary else "confidence (max prob)")
    ax.set_ylabel("fraction of positives" if binary else "accuracy")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_title(f"ECE = {data.ece:.4f} ({int(data.counts.sum())} samples)")
    ax.legend(loc="upper left")
    return fig
