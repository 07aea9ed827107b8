"""What every dropkit module shares: a validated ``p``, ``inplace``, and torch's repr.

Design decision (binding for every module in :mod:`dropkit.nn`): **a dropkit module that
replaces a torch class subclasses it**, with :class:`DropoutModule` first in the bases::

    class Dropout(DropoutModule, torch.nn.Dropout): ...
    class Dropout2d(DropoutModule, torch.nn.Dropout2d): ...
    class AlphaDropout(DropoutModule, torch.nn.AlphaDropout): ...

so ``isinstance(m, torch.nn.Dropout)`` checks in other libraries (Hugging Face, timm, Lightning)
keep finding converted layers, while ``isinstance(m, DropoutModule)`` finds every dropkit layer.
The dropkit class overrides ``forward`` (one :mod:`dropkit.functional` call) and validates ``p``
on every assignment; torch's ``__init__`` runs once with its defaults through ``super()`` and
the dropkit values are set after it. Modules without a torch twin (DropPath, LockedDropout,
...) subclass :class:`DropoutModule` alone. ``repr`` matches torch's (``p`` printed as given:
``Dropout(p=0, inplace=False)``); dropkit's extra arguments appear only when not at their
defaults.

TorchScript is not supported: ``torch.jit.script`` on a model holding a dropkit module raises a
``RuntimeError`` that says so (use ``torch.compile``).

Functionals follow torch's signature where torch has the function:
``f(input, p=0.5, training=True, inplace=False, *, <dropkit keyword extras>)``.
"""

from __future__ import annotations

from torch import nn

from dropkit.reference.base import DropRate


class DropoutModule(nn.Module):
    """Base of the dropout-family modules (see the module docstring for the subclassing rule).

    ``p`` is validated on every assignment (so schedules cannot set a bad rate); ``training``
    follows ``model.train()`` / ``model.eval()``. Subclasses implement ``forward`` as one call to
    their :mod:`dropkit.functional` op.
    """

    p = DropRate()

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()  # torch's twin (if a base) runs with its defaults, then ours apply
        self.p = p
        self.inplace = bool(inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"

    def __prepare_scriptable__(self) -> DropoutModule:
        # torch.jit.script calls this on every submodule before compiling it.
        raise RuntimeError(
            f"dropkit.nn.{type(self).__name__} does not support TorchScript (torch.jit.script): "
            "its masks come from numba/Triton kernels that TorchScript cannot call. Use "
            "torch.compile instead, or script a copy of the model built with torch's own layers"
        )
