"""WeightDrop: DropConnect on named parameters of any module (AWD-LSTM's recurrent dropout).

Merity, Keskar & Socher 2018, "Regularizing and Optimizing LSTM Language Models"
(arXiv:1708.02182), section 2: DropConnect (Wan et al. 2013) on the hidden-to-hidden matrices,
one mask per forward shared by every timestep, so cuDNN's fused RNN kernels still apply.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from torch import nn
from torch.func import functional_call

from dropkit import functional as F
from dropkit.reference.base import DropRate

# cuDNN warns when an RNN's weights are not views of its one flat buffer; the dropped copies
# never are, and compacting them is exactly what each training call has to do anyway.
_CUDNN_CHUNK_WARNING = r"RNN module weights are not part of single contiguous chunk of memory"


class WeightDrop(nn.Module):
    r"""Apply inverted dropout to the named parameters of ``module`` at every training forward.

    Train: ``module(*args)`` computed with :math:`\tilde W = M \odot W / q`,
    :math:`M \sim \mathrm{Bernoulli}(1 - p)` (a fresh mask per forward and per name), e.g. on
    ``["weight_hh_l0"]`` of an ``nn.LSTM``; eval: ``module(*args)`` unchanged (never dropped,
    unlike the original AWD code's ``variational=True``).

    The dropped weights are passed with ``torch.func.functional_call``, so the raw parameters
    are never overwritten (no zeroed weights, no re-registered ``Parameter``), gradients reach
    them through the mask, and the ``state_dict`` keys stay ``module.<name>``. Works with
    ``nn.LSTM``, ``nn.GRU``, ``nn.RNN``, ``nn.Linear`` and any module whose forward reads its
    parameters as attributes. Merity et al. 2018 (arXiv:1708.02182); Wan et al. 2013 (ICML).

    Shape: those of ``module``.

    Args:
        module: the module whose parameters are dropped.
        weights: parameter names as in ``module.named_parameters()`` (a single str is one name).
        p: drop probability in [0, 1], validated on every assignment.

    Example:
        >>> import torch
        >>> lstm = WeightDrop(torch.nn.LSTM(3, 4), ["weight_hh_l0"], p=0.5)
        >>> out, (h, c) = lstm(torch.ones(5, 2, 3))
        >>> out.shape
        torch.Size([5, 2, 4])
    """

    p = DropRate()

    def __init__(self, module: nn.Module, weights: Sequence[str] | str, p: float = 0.5) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"WeightDrop: module must be a torch.nn.Module, got {type(module)}")
        names = (weights,) if isinstance(weights, str) else tuple(weights)
        available = [name for name, _ in module.named_parameters()]
        if not names:
            raise ValueError(f"WeightDrop: weights is empty; choose from {available}")
        for name in names:
            if not isinstance(name, str) or name not in available:
                raise ValueError(
                    f"WeightDrop: {name!r} is not a parameter of {type(module).__name__}; "
                    f"available parameters: {available}"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"WeightDrop: weights lists a name twice: {list(names)}")
        self.module = module
        self.weights = names
        self.p = p
        # Only RNNs can hit the cuDNN warning; elsewhere skip the filter, which torch.compile
        # cannot trace (it would cost a Linear its fullgraph compilation).
        self._has_rnn = any(isinstance(m, nn.RNNBase) for m in module.modules())

    def forward(self, *args, **kwargs):
        if not self.training:
            return self.module(*args, **kwargs)
        dropped = {name: F.dropout(self._raw(name), self.p) for name in self.weights}
        if not self._has_rnn:
            return functional_call(self.module, dropped, args, kwargs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _CUDNN_CHUNK_WARNING, UserWarning)
            return functional_call(self.module, dropped, args, kwargs)

    def _raw(self, name: str):
        # getattr rather than get_parameter: under an outer functional_call or torch.func
        # transform the attribute is a plain tensor standing in for the parameter.
        owner, _, attr = name.rpartition(".")
        return getattr(self.module.get_submodule(owner) if owner else self.module, attr)

    def extra_repr(self) -> str:
        return f"weights={list(self.weights)}, p={self.p}"
