"""Plain stochastic gradient descent for reference networks."""

from __future__ import annotations

import numbers

import numpy as np

from .base import Layer


class SGD:
    r"""SGD with optional momentum: :math:`v \leftarrow \mu v + g`, :math:`\theta \leftarrow
    \theta - \eta v` (the PyTorch convention; :math:`\mu = 0` is plain SGD,
    :math:`\theta \leftarrow \theta - \eta g`).

    Updates the arrays of every ``layer.params`` in ``model.modules()`` in place, using the
    gradients the last ``backward`` left in ``layer.grads``.
    """

    def __init__(self, model: Layer, lr: float, momentum: float = 0.0) -> None:
        for name, value in (("lr", lr), ("momentum", momentum)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"SGD: {name} must be a real number, got {type(value).__name__}")
        if not lr > 0:
            raise ValueError(f"SGD: lr must be > 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum}")
        self.model = model
        self.lr = float(lr)
        self.momentum = float(momentum)
        self._velocity: dict[tuple[int, str], np.ndarray] = {}

    def step(self) -> None:
        """Apply one update; raises if a parameter has no gradient yet (backward not run)."""
        for index, layer in enumerate(self.model.modules()):
            for name, param in layer.params.items():
                if name not in layer.grads:
                    raise RuntimeError(
                        f"SGD.step(): {type(layer).__name__}.{name} has no gradient; "
                        "run backward() before step()"
                    )
                grad = layer.grads[name]
                if self.momentum:
                    key = (index, name)
                    v = self._velocity.get(key)
                    v = grad.copy() if v is None else self.momentum * v + grad
                    self._velocity[key] = v
                    grad = v
                param -= self.lr * grad
