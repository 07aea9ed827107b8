"""DropPath (stochastic depth): drop a whole residual branch per sample.

Huang et al. 2016, "Deep Networks with Stochastic Depth" (arXiv:1603.09382); the name comes from
FractalNet, Larsson et al. 2017 (arXiv:1605.07648). Applied to the branch output f(x) before
the residual add ``x + DropPath(f(x))``.
"""

from __future__ import annotations

from .base import RngLike
from .dropout import Dropout

_MODES = ("row", "batch")


class DropPath(Dropout):
    r"""Keep or drop the whole input of each sample (``mode="row"``) or of the batch
    (``mode="batch"``).

    Mask :math:`b \sim \mathrm{Bernoulli}(q)` of shape ``(N, 1, ..., 1)`` (row) or
    ``(1, ..., 1)`` (batch). With ``scale_by_keep=True`` train :math:`y = b\,x / q`, eval
    :math:`y = x`. With ``scale_by_keep=False`` train :math:`y = b\,x` and eval
    :math:`y = q\,x`, the test rule of Huang et al. (:math:`x + p_l f(x)`), so that training and
    evaluation agree in expectation. (timm's ``DropPath`` returns ``x`` in eval either way.)

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

    def _shared_dims(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) < 1:
            raise ValueError(
                "DropPath expects input of shape (N, *) (at least 1 dim), got a scalar"
            )
        first = 1 if self.mode == "row" else 0
        return tuple(range(first, len(shape)))

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}, scale_by_keep={self.scale_by_keep}"
