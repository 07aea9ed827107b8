"""The seed experiment reproduced from scratch: the shape of its result."""

import pytest

from dropkit.experiments import ToyMLPConfig, run_toy_mlp


@pytest.fixture(scope="module")
def results():
    return {p: run_toy_mlp(ToyMLPConfig(p=p)) for p in (0.5, 0.0)}


@pytest.mark.parametrize("p", [0.5, 0.0])
def test_loss_falls(results, p):
    """Training loss at the last logged epoch is well below the loss at epoch 1 (~log 5)."""
    history = results[p].history
    assert [r.epoch for r in history] == [1, 50, 100, 150, 200]
    assert history[-1].loss < 0.5 * history[0].loss
    losses = [r.loss for r in history]
    assert losses == sorted(losses, reverse=True)


def test_dropout_eval_accuracy_at_least_train_mode_accuracy(results):
    """With dropout the averaged (eval) network fits at least as well as a sampled one."""
    r = results[0.5]
    assert r.eval_accuracy >= r.train_mode_accuracy
    assert r.eval_accuracy > 0.9  # random labels: memorised far above the 0.2 chance level


def test_no_dropout_train_and_eval_modes_agree(results):
    """With p = 0 the training-mode pass is deterministic and equals evaluation."""
    r = results[0.0]
    assert r.train_mode_accuracy == r.eval_accuracy


def test_runs_are_reproducible():
    """The same config (seed) gives the same history, bit for bit."""
    config = ToyMLPConfig(epochs=20, log_every=5)
    assert run_toy_mlp(config).history == run_toy_mlp(config).history


def test_on_epoch_callback_sees_every_logged_record():
    seen = []
    result = run_toy_mlp(ToyMLPConfig(epochs=10, log_every=5), on_epoch=seen.append)
    assert seen == result.history
