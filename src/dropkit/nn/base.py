"""What every dropkit module shares: a validated ``p``, ``inplace``, and the repr."""

from __future__ import annotations

from torch import nn

from dropkit.reference.base import DropRate


class DropoutModule(nn.Module):
    """Base of the dropout-family modules.

    ``p`` is validated on every assignment (so schedules cannot set a bad rate); ``training``
    follows ``model.train()`` / ``model.eval()``. Subclasses implement ``forward`` as one call to
    their :mod:`dropkit.functional` op.
    """

    p = DropRate()

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        self.p = p
        self.inplace = bool(inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
