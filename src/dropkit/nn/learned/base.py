"""The protocol shared by layers whose dropout rate is learned, and the model-level helpers.

A learned-rate layer subclasses :class:`LearnedDropout` and implements

* ``regularization()``: the term its paper adds to the loss, as a 0-d tensor (the KL
  approximation for the variational layers, Concrete dropout's weight + entropy term), already
  scaled as the paper prescribes for one layer;
* ``rates()``: its current rate(s) as a dict of tensors (``{"p": ...}`` for Concrete dropout and
  Standout's mean keep probability, ``{"log_alpha": ...}`` for the variational layers).

:func:`regularization` and :func:`dropout_rates` walk a model and collect these.
"""

from __future__ import annotations

import torch
from torch import nn


class LearnedDropout(nn.Module):
    """Base class of the learned-rate layers (see the module docstring)."""

    def regularization(self) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def rates(self) -> dict[str, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


def regularization(model: nn.Module, *, scale: float = 1.0) -> torch.Tensor:
    """Sum of ``regularization()`` over every :class:`LearnedDropout` layer of ``model``, times
    ``scale`` (e.g. the KL weight of an annealing schedule, or ``1 / N`` to put a per-dataset KL
    on the scale of a per-example mean loss). Returns a 0-d tensor (0 when there is none)."""
    terms = [m.regularization() for m in model.modules() if isinstance(m, LearnedDropout)]
    if not terms:
        param = next(model.parameters(), None)
        return torch.zeros((), device=None if param is None else param.device)
    return scale * torch.stack([t.reshape(()) for t in terms]).sum()


def dropout_rates(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """``{module path: layer.rates()}`` for every :class:`LearnedDropout` layer (detached)."""
    return {
        name: {key: value.detach() for key, value in module.rates().items()}
        for name, module in model.named_modules()
        if isinstance(module, LearnedDropout)
    }
