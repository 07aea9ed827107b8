"""WeightDrop: DropConnect on named parameters of LSTM, GRU and Linear (AWD-LSTM)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call

from dropkit.functional import bernoulli_mask, dropout
from dropkit.nn import WeightDrop
from tests.helpers import clones
from tests.stats import assert_binomial

SEQ = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))


def _lstm(**kw) -> nn.Module:
    torch.manual_seed(0)
    return nn.LSTM(3, 4, **kw)


def _gru(**kw) -> nn.Module:
    torch.manual_seed(0)
    return nn.GRU(3, 4, **kw)


def _linear(**kw) -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(3, 4, **kw)


def _out(y):
    return y[0] if isinstance(y, tuple) else y


MODULES = [
    (_lstm, ["weight_hh_l0"], SEQ),
    (_lstm, ["weight_hh_l0", "weight_ih_l0"], SEQ),
    (_gru, ["weight_hh_l0"], SEQ),
    (_linear, ["weight"], SEQ[0]),
]


@pytest.mark.parametrize(("make", "names", "x"), MODULES)
def test_training_forward_uses_the_dropped_weights(make, names, x):
    """Same global seed: output equals a copy of the module holding W * M / q, M drawn per
    name in the order given."""
    module = make()
    layer = WeightDrop(module, names, p=0.4)
    torch.manual_seed(3)
    out = _out(layer(x))
    torch.manual_seed(3)
    manual = copy.deepcopy(module)
    with torch.no_grad():
        for name in names:
            getattr(manual, name).copy_(dropout(getattr(module, name), 0.4))
    assert torch.equal(out, _out(manual(x)))
    assert not torch.equal(out, _out(module(x)))


@pytest.mark.parametrize(("make", "names", "x"), MODULES)
def test_train_differs_eval_is_the_module_and_raw_weights_stay(make, names, x):
    module = make()
    raw = {k: v.detach().clone() for k, v in module.state_dict().items()}
    layer = WeightDrop(module, names, p=0.5)
    first, second = _out(layer(x)), _out(layer(x))
    assert not torch.equal(first, second)
    first.sum().backward()
    for k, v in module.state_dict().items():
        assert torch.equal(v, raw[k]), k
    for name in names:
        assert getattr(module, name).grad is not None
        assert getattr(module, name).grad.any()
    layer.eval()
    assert not torch.equal(_out(layer(x)), first)
    fresh = make()  # same seed: the unwrapped, never-trained module
    assert torch.equal(_out(layer(x)), _out(fresh(x)))


def test_gradient_reaches_the_raw_weight_through_the_mask():
    """dW = (dy^T x) * M / q: zero exactly where the weight was dropped."""
    module = nn.Linear(40, 30, bias=False)
    layer = WeightDrop(module, ["weight"], p=0.5)
    x = torch.randn(8, 40)
    torch.manual_seed(4)
    layer(x).sum().backward()
    torch.manual_seed(4)
    keep = bernoulli_mask(module.weight.shape, 0.5)
    expected = torch.where(keep, torch.ones(8, 30).T @ x * 2.0, 0.0)
    torch.testing.assert_close(module.weight.grad, expected)


def test_kept_fraction_of_the_weight_mask():
    module = nn.Linear(200, 100, bias=False)
    nn.init.ones_(module.weight)
    torch.manual_seed(5)
    y = WeightDrop(module, "weight", p=0.3)(torch.eye(200))  # y = M^T / q
    assert_binomial(int((y != 0).sum()), 20000, 0.7, "kept weights")


@pytest.mark.parametrize("make", [_lstm, _gru])
def test_no_warnings_on_cpu(make):
    layer = WeightDrop(make(num_layers=2), ["weight_hh_l0", "weight_hh_l1"], p=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _out(layer(SEQ)).sum().backward()
        layer.eval()
        layer(SEQ)
    assert caught == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN needs a CUDA device")
def test_no_cudnn_chunk_warning_on_cuda():
    layer = WeightDrop(_lstm().cuda(), ["weight_hh_l0"], p=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _out(layer(SEQ.cuda())).sum().backward()
    assert caught == []


def test_gradcheck_lstm_and_linear_with_the_mask_held_fixed():
    lstm = WeightDrop(nn.LSTM(3, 2, dtype=torch.float64), ["weight_hh_l0"], p=0.4)
    x = SEQ[:3].double().requires_grad_()
    w = lstm.module.weight_hh_l0.detach().clone().requires_grad_()

    def run_lstm(x, w):
        torch.manual_seed(0)
        return functional_call(lstm, {"module.weight_hh_l0": w}, (x,))[0]

    assert torch.autograd.gradcheck(run_lstm, (x, w))
    linear = WeightDrop(nn.Linear(3, 4, dtype=torch.float64), ["weight"], p=0.4)
    w = linear.module.weight.detach().clone().requires_grad_()

    def run_linear(x, w):
        torch.manual_seed(0)
        return functional_call(linear, {"module.weight": w}, (x,))

    assert torch.autograd.gradcheck(run_linear, (x, w))


def test_p_one_and_p_zero_on_linear():
    module = _linear()
    x = SEQ[0]
    assert torch.equal(WeightDrop(module, ["weight"], p=1.0)(x), module.bias.expand(2, 4))
    assert torch.equal(WeightDrop(module, ["weight"], p=0.0)(x), module(x))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: WeightDrop(_lstm(), ["weight_hh"]), ValueError, "weight_hh_l0"),
        (lambda: WeightDrop(_linear(), ["bias", "wieght"]), ValueError, r"\['weight', 'bias'\]"),
        (lambda: WeightDrop(_linear(), []), ValueError, "empty"),
        (lambda: WeightDrop(_linear(), ["weight", "weight"]), ValueError, "twice"),
        (lambda: WeightDrop(torch.ones(3), ["weight"]), TypeError, "nn.Module"),
        (lambda: WeightDrop(_linear(), ["weight"], p=1.5), ValueError, r"\[0, 1\]"),
    ],
)
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_repr_and_p_validated_on_assignment():
    layer = WeightDrop(_lstm(), ["weight_hh_l0"], p=0.25)
    assert repr(layer).startswith(
        "WeightDrop(\n  weights=['weight_hh_l0'], p=0.25\n  (module): LSTM"
    )
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        layer.p = 1.5
    assert layer.p == 0.25


@pytest.mark.parametrize(("make", "names", "x"), MODULES)
def test_state_dict_copy_and_pickle(make, names, x):
    layer = WeightDrop(make(), names, p=0.3)
    keys = list(layer.state_dict())
    assert keys == [f"module.{k}" for k in make().state_dict()]
    fresh = WeightDrop(make(), names, p=0.3)
    with torch.no_grad():
        for param in fresh.parameters():
            param.zero_()
    fresh.load_state_dict(layer.state_dict())
    for clone in (fresh, *clones(layer)):
        assert repr(clone) == repr(layer)
        torch.manual_seed(1)
        expected = _out(layer(x))
        torch.manual_seed(1)
        assert torch.equal(_out(clone(x)), expected)


def test_under_torch_compile():
    linear = WeightDrop(_linear(), ["weight"], p=0.5)
    # Dynamo refuses to trace nn.LSTM/GRU ("Attempted to wrap RNN, GRU, or LSTM") and the
    # cuDNN warning filter, so the RNN form compiles with graph breaks, not fullgraph.
    lstm = WeightDrop(_lstm(), ["weight_hh_l0"], p=0.5)
    for layer, x, fullgraph in ((linear, SEQ[0], True), (lstm, SEQ, False)):
        compiled = torch.compile(layer, backend="aot_eager", fullgraph=fullgraph)
        torch.manual_seed(2)
        eager = _out(layer(x))
        torch.manual_seed(2)
        assert torch.equal(_out(compiled(x)), eager)
        layer.eval()
        assert torch.equal(_out(compiled(x)), _out(layer.module(x)))
