"""The UCI MC-dropout protocol runs end to end on real data (a tiny configuration)."""

from __future__ import annotations

import math

import pytest

from dropkit.experiments.uci_mc import PAPER_TABLE1, UCIConfig, run_uci, summarise
from tests.conftest import DATA as SHARED


@pytest.mark.skipif(not (SHARED / "uci").is_dir(), reason=f"shared UCI data not found at {SHARED}")
def test_one_split_of_yacht_gives_finite_rmse_and_log_likelihood():
    """Grid search, retraining and MC testing run; the chosen (p, tau) come from the grids."""
    config = UCIConfig("yacht", splits=1, epochs=2, mc_samples=50, data_path=str(SHARED))
    (result,) = run_uci(config)
    assert result.p in (0.005, 0.01, 0.05, 0.1)
    assert result.tau in (0.25, 0.5, 0.75)
    assert math.isfinite(result.rmse)
    assert result.rmse > 0
    assert math.isfinite(result.log_likelihood)
    summary = summarise([result])
    assert summary["splits"] == 1
    assert summary["rmse"] == result.rmse


def test_paper_table_covers_every_dataset():
    from dropkit.data import DATASETS

    assert set(PAPER_TABLE1) == set(DATASETS)
