"""DropPath (stochastic depth): drop a whole residual branch per sample.

Huang et al. 2016, "Deep Networks with Stochastic Depth" (arXiv:1603.09382); the name comes from
FractalNet, Larsson et al. 2017 (arXiv:1605.07648). Applied to the branch output f(x) before
the residual add ``x + DropPath(f(x))``.
"""

from __future__ import annotations

import numpy as np

from .base import RngLike, as_float_array
from .dropout import Dropout

_MODES = ("row", "batch")


class DropPath(Dropout):
    r"""Keep or drop the whole input of each sample (``mode="row"``) or of the batch
    (``mode="batch"``).

    Mask :math:`b \sim \mathrm{Bernoulli}(q)` of shape ``(N, 1, ..., 1)`` (row) or
    ``(1, ..., 1)`` (batch). Train :math:`y = b\,x / q` (``scale_by_keep=True``) or
    :math:`y = b\,x` (``scale_by_keep=False``); eval :math:`y = x` either way, as timm's
    ``DropPath`` and torchvision's ``StochasticDepth`` do, so converted models evaluate exactly
    as before. With ``scale_by_keep=False`` the training output therefore has expectation
    :math:`q\,x`; the paper's test rule :math:`x + p_l f(x)` is then yours to apply (or use the
    default, which needs no test-time rule).

    Shape: x ``(N, *)`` with at least one dim; output the same.
    """

    def __init__(
        self,
        p: float = 0.5,
        mode: str = "row",
        scale_by_keep: bool = True,
        *,
        rng: RngLike = None,
    ) -> None:
        super().__init__(p, inverted=scale_by_keep, rng=rng)
        if mode not in _MODES:
            raise ValueError(f"DropPath: mode must be 'row' or 'batch', got {mode!r}")
        self.mode = mode

    @property
    def scale_by_keep(self) -> bool:
        return self.inverted

    def forward(
        self, x: np.ndarray, training: bool = True, *, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """Apply DropPath; evaluation returns ``x`` itself whatever ``scale_by_keep`` is."""
        if not training:
            x = as_float_array(x, "DropPath")
            self._shared_dims(x.shape)
            return self._masked_forward(x, None, x.dtype.type(1))
        return super().forward(x, training, mask=mask)

    def _shared_dims(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) < 1:
            raise ValueError(
                "DropPath expects input of shape (N, *) (at least 1 dim), got a scalar"
            )
        first = 1 if self.mode == "row" else 0
        return tuple(range(first, len(shape)))

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}, scale_by_keep={self.scale_by_keep}"
