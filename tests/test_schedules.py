"""dropkit.schedules: exact schedule values, the scheduler's bookkeeping, and drop_path_rates."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

import dropkit.nn as dkn
from dropkit import schedules as S
from dropkit.reference.base import DropRate
from tests.helpers import import_peer


# -- schedule functions ------------------------------------------------------------------------
def test_linear_exact_values() -> None:
    assert [S.linear(4)(t) for t in range(7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    ramp = S.linear(5, start=0.2)
    assert [ramp(t) for t in (0, 1, 5, 9)] == pytest.approx([0.2, 0.36, 1.0, 1.0], abs=1e-15)


def test_cosine_exact_values() -> None:
    half = (1 - math.sqrt(0.5)) / 2  # (1 - cos(pi/4)) / 2
    values = [S.cosine(4)(t) for t in range(6)]
    assert values == pytest.approx([0.0, half, 0.5, 1 - half, 1.0, 1.0], abs=1e-15)
    assert S.cosine(2, start=0.4)(1) == pytest.approx(0.4 + 0.6 * 0.5, abs=1e-15)


def test_step_exact_values() -> None:
    schedule = S.step([2, 5], [0.1, 0.5, 1.0])
    assert [schedule(t) for t in range(7)] == [0.1, 0.1, 0.5, 0.5, 0.5, 1.0, 1.0]


def never_exceeds(rate, target: float, steps: range) -> bool:
    return all(0.0 <= rate(t) <= target for t in steps)


def test_curriculum_matches_morerio_closed_form_and_stays_below_target() -> None:
    gamma, target = 0.01, 0.6
    keep_bar = 1 - target
    schedule = S.curriculum(gamma)
    for t in (0, 1, 10, 100, 1000):
        theta = (1 - keep_bar) * math.exp(-gamma * t) + keep_bar  # keep probability, paper eq.
        assert target * schedule(t) == pytest.approx(1 - theta, rel=1e-12, abs=1e-15)
    assert schedule(0) == 0.0  # no dropout at the start
    steps = range(0, 5000, 7)
    assert never_exceeds(lambda t: target * schedule(t), target, steps)
    values = [schedule(t) for t in steps]
    assert values == sorted(values)  # the rate only grows
    # The typo'd formula seen in ports fails the same check (it starts at 2p and tends to 1 + p).
    buggy = lambda t: 1 - (1 - target) * math.exp(-gamma * t) + target  # noqa: E731
    assert not never_exceeds(buggy, target, steps)
    assert buggy(5000) > 1.0


BAD_ARGUMENTS = [
    (lambda: S.linear(0), "total_steps"),
    (lambda: S.linear(10, start=1.5), "start"),
    (lambda: S.cosine(-3), "total_steps"),
    (lambda: S.cosine(3, start=math.nan), "start"),
    (lambda: S.step([5, 3], [0.0, 0.5, 1.0]), "milestones"),
    (lambda: S.step([2], [0.5]), "fractions"),
    (lambda: S.step([2], [0.5, 1.2]), r"fractions\[1\]"),
    (lambda: S.curriculum(0.0), "gamma"),
    (lambda: S.curriculum(-1.0), "gamma"),
    (lambda: S.curriculum(math.inf), "gamma"),
    (lambda: S.linear(3)(-1), "step t"),
    (lambda: S.drop_path_rates(0, 0.1), "depth"),
    (lambda: S.drop_path_rates(4, 1.5), "max_rate"),
    (lambda: S.drop_path_rates(4, -0.1), "max_rate"),
    (lambda: S.drop_path_rates(5, 0.1, stagewise=[2, 2]), "stagewise"),
    (lambda: S.drop_path_rates(4, 0.1, stagewise=[4, 0]), r"stagewise\[1\]"),
]


@pytest.mark.parametrize(("call", "argument"), BAD_ARGUMENTS)
def test_bad_arguments_raise_value_error_naming_the_argument(call, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        call()


# -- DropoutScheduler --------------------------------------------------------------------------
class CustomRate(nn.Module):
    """Not a DropoutModule, but its p is a validated DropRate: the scheduler must find it."""

    p = DropRate()

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p


def make_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(4, 4),
        nn.Dropout(0.5),
        nn.Sequential(dkn.Dropout(0.2), nn.Linear(4, 4), dkn.DropPath(0.4)),
        nn.ModuleDict({"alpha": nn.AlphaDropout(0.3), "custom": CustomRate(0.8)}),
    )


TARGETS = {"1": 0.5, "2.0": 0.2, "2.2": 0.4, "3.alpha": 0.3, "3.custom": 0.8}


def test_scheduler_starts_at_target_times_schedule0_and_follows_it() -> None:
    model = make_model()
    schedule = S.linear(10, start=0.1)
    scheduler = S.DropoutScheduler(model, schedule)
    assert scheduler.targets == TARGETS
    assert scheduler.rates() == pytest.approx({n: 0.1 * p for n, p in TARGETS.items()})
    for t in range(1, 13):
        scheduler.step()
        assert scheduler.t == t
        assert scheduler.rates() == pytest.approx({n: p * schedule(t) for n, p in TARGETS.items()})
    assert model[1].p == pytest.approx(0.5)  # the modules themselves hold the rate


def test_scheduler_drives_only_selected_modules() -> None:
    model = make_model()
    scheduler = S.DropoutScheduler(model, S.linear(4), select=lambda name, m: name.startswith("2"))
    assert set(scheduler.rates()) == {"2.0", "2.2"}
    scheduler.step()
    assert (model[2][0].p, model[2][2].p) == pytest.approx((0.05, 0.1))
    assert (model[1].p, model[3]["alpha"].p, model[3]["custom"].p) == (0.5, 0.3, 0.8)


def test_scheduler_on_an_explicit_list_of_modules() -> None:
    first, second, untouched = nn.Dropout(0.4), dkn.GaussianDropout(0.6), nn.Dropout(0.9)
    scheduler = S.DropoutScheduler([first, second], S.step([1], [0.5, 1.0]))
    assert scheduler.rates() == pytest.approx({"0": 0.2, "1": 0.3})
    scheduler.step()
    assert (first.p, second.p, untouched.p) == pytest.approx((0.4, 0.6, 0.9))


def test_scheduler_rejects_models_without_dropout_and_non_dropout_modules() -> None:
    with pytest.raises(ValueError, match="no dropout module"):
        S.DropoutScheduler(nn.Sequential(nn.Linear(2, 2)), S.linear(3))
    with pytest.raises(ValueError, match="select"):
        S.DropoutScheduler(make_model(), S.linear(3), select=lambda name, m: False)
    with pytest.raises(TypeError, match="Linear"):
        S.DropoutScheduler([nn.Dropout(0.1), nn.Linear(2, 2)], S.linear(3))
    with pytest.raises(ValueError, match=r"schedule\(0\)"):
        S.DropoutScheduler(make_model(), lambda t: 1.5)


def test_state_dict_resume_gives_the_same_rates() -> None:
    schedule = S.cosine(20, start=0.05)
    model = make_model()
    scheduler = S.DropoutScheduler(model, schedule)
    for _ in range(7):
        scheduler.step()
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)  # as a training checkpoint would
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    # The resumed model's modules hold other rates (a scheduler changed them before the save):
    # the targets must come from the state, not from the modules.
    resumed_model = make_model()
    S.DropoutScheduler(resumed_model, S.linear(3)).step()
    resumed = S.DropoutScheduler(resumed_model, schedule)
    resumed.load_state_dict(state)
    assert resumed.t == 7
    assert resumed.targets == TARGETS
    assert resumed.rates() == scheduler.rates()
    for _ in range(5):
        scheduler.step()
        resumed.step()
        assert resumed.rates() == scheduler.rates()
    with pytest.raises(ValueError, match="targets"):
        S.DropoutScheduler(nn.Sequential(nn.Dropout()), schedule).load_state_dict(state)


def test_rates_are_set_through_the_module_so_dropkit_validates_them() -> None:
    noise = dkn.GaussianDropout(0.5)  # p must stay below 1: its noise variance is p / (1 - p)
    scheduler = S.DropoutScheduler(nn.Sequential(noise), S.linear(2))
    with pytest.raises(ValueError, match=r"GaussianDropout.*\[0, 1\)"):
        scheduler.load_state_dict({"t": 5, "targets": {"0": 1.0}})


def test_scheduler_drives_timm_and_torchvision_modules() -> None:
    layers = import_peer("timm.layers")
    ops = import_peer("torchvision.ops")
    model = nn.Sequential(layers.DropPath(0.4), ops.StochasticDepth(0.2, "row"))
    scheduler = S.DropoutScheduler(model, S.linear(2))
    assert scheduler.rates() == {"0": 0.0, "1": 0.0}
    scheduler.step()
    assert (model[0].drop_prob, model[1].p) == pytest.approx((0.2, 0.1))


# -- drop_path_rates ---------------------------------------------------------------------------
@pytest.mark.parametrize(("depth", "max_rate"), [(1, 0.3), (2, 0.1), (12, 0.1), (24, 0.5)])
def test_drop_path_rates_is_the_linspace_rule(depth: int, max_rate: float) -> None:
    rates = S.drop_path_rates(depth, max_rate)
    assert rates == [x.item() for x in torch.linspace(0, max_rate, depth)]  # timm's rule
    assert all(isinstance(r, float) for r in rates)
    # Block l of L (1-based) gets (l - 1) / (L - 1) * max_rate: 0 first, max_rate last.
    expected = [(i / (depth - 1) if depth > 1 else 0.0) * max_rate for i in range(depth)]
    assert rates == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_drop_path_rates_stagewise_repeats_one_rate_per_stage() -> None:
    rates = S.drop_path_rates(6, 0.3, stagewise=[1, 2, 3])
    per_stage = torch.linspace(0, 0.3, 3).tolist()
    assert rates == [per_stage[0]] + [per_stage[1]] * 2 + [per_stage[2]] * 3
    assert rates == pytest.approx([0.0, 0.15, 0.15, 0.3, 0.3, 0.3], rel=1e-6)
    assert S.drop_path_rates(3, 0.2, stagewise=[3]) == [0.0, 0.0, 0.0]


def test_drop_path_rates_equal_timm() -> None:
    layers = import_peer("timm.layers")
    for depth, max_rate in [(1, 0.3), (12, 0.1), (24, 0.5)]:
        assert S.drop_path_rates(depth, max_rate) == layers.calculate_drop_path_rates(
            max_rate, depth
        )
