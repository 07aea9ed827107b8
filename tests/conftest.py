"""Shared test settings: where the real data sets are.

Tests on real data read them from ``$DROPKIT_DATA`` (as the library does) or, in a source
checkout, from ``../shared/data`` beside the repository; without either they skip, saying so.
The folder is read at collection, before any test changes the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_BESIDE = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: The real-data folder the tests read (it may not exist).
DATA = Path(os.environ["DROPKIT_DATA"]) if os.environ.get("DROPKIT_DATA") else _BESIDE


def needs_data(relpath: str = "") -> pytest.MarkDecorator:
    """Skip unless ``DATA / relpath`` exists, naming the path and how to provide it."""
    target = DATA / relpath
    return pytest.mark.skipif(
        not target.exists(),
        reason=f"real data not found at {target} (set DROPKIT_DATA to a data folder)",
    )
