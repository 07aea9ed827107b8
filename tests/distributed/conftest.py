"""The distributed runs, spawned once per world size and shared by the tests of this folder."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Each rank's results of ``_workers.worker`` on 4 gloo processes (data parallel on 4, 2
    and 1 ranks, the controls, FSDP2, tensor parallel, sharded MC): spawned once a session."""
    from . import _workers as W

    out = tmp_path_factory.mktemp("distributed")
    W.spawn(W.worker, W.WORLD, out)
    return [torch.load(out / f"rank_{r}.pt") for r in range(W.WORLD)]
