"""Locked (variational) dropout for sequences: one mask per sequence, shared over time.

Gal & Ghahramani 2016, "A Theoretically Grounded Application of Dropout in Recurrent Neural
Networks" (arXiv:1512.05287): the same units are dropped at every time step of a sequence, and
each sequence of the batch draws its own mask.
"""

from __future__ import annotations

from .base import RngLike
from .dropout import Dropout


class LockedDropout(Dropout):
    r"""Dropout whose mask is constant along the time axis.

    Time-major input ``(T, N, H)`` uses a mask ``(1, N, H)``; with ``batch_first=True`` the input
    is ``(N, T, H)`` and the mask ``(N, 1, H)``. Train :math:`y_{t} = m \odot x_{t} / q` for every
    step t; eval :math:`y = x`; backward :math:`dx_t = m \odot dy_t / q`.
    """

    def __init__(self, p: float = 0.5, batch_first: bool = False, *, rng: RngLike = None) -> None:
        super().__init__(p, inverted=True, rng=rng)
        self.batch_first = bool(batch_first)

    def _shared_dims(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        layout = "(N, T, H)" if self.batch_first else "(T, N, H)"
        if len(shape) != 3:
            raise ValueError(
                f"LockedDropout expects input of shape {layout} (3 dims), got {len(shape)} dims "
                f"with shape {tuple(shape)}"
            )
        return (1,) if self.batch_first else (0,)

    def extra_repr(self) -> str:
        return f"p={self.p}, batch_first={self.batch_first}"
