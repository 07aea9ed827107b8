"""Whether a model output is held by nothing but :func:`dropkit.mc.predict`'s own variable.

A model's logits of all T samples can take their probabilities in place (no second
``(T, N, L, V)`` tensor, whose page faults cost more than the softmax) only if no one else can
see that memory: not the model (an attribute, a cache), not the caller (an input returned as
is, a slice of it), not autograd. :func:`sole_owner` proves it from reference counts: the
Python references to the tensor, the C++ references to its ``TensorImpl`` and to its storage,
and, for a view (a ``Linear`` on a 3-D input returns a view of its 2-D result), the same for
the view's base. The counts that mean "nobody else" are read at import from tensors made for
the purpose, and the proof is used only if the same probe also tells a tensor held elsewhere
apart; otherwise (another torch, another interpreter) every output is copied, as before.
"""

from __future__ import annotations

import sys

import torch

_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _counts(t: torch.Tensor) -> tuple[int, ...] | None:
    """Reference counts of ``t`` (one local name in the caller), its base and its storage."""
    try:
        base = t._base
        out = [sys.getrefcount(t), t._use_count()]
        if base is not None:
            out += [sys.getrefcount(base), base._use_count()]
        out.append(_storage_use_count(t.untyped_storage()._cdata))
        return tuple(out)
    except (AttributeError, RuntimeError, TypeError):
        return None


def _as_sole_owner_sees(t: torch.Tensor) -> tuple[int, ...] | None:
    """:func:`_counts` one call deep, as :func:`sole_owner` reads them (the frames hold
    references too)."""
    return _counts(t)


def _view_alone() -> tuple[int, ...] | None:
    base = torch.empty(4)
    t = base.view(2, 2)
    del base
    return _as_sole_owner_sees(t)


def _plain_alone() -> tuple[int, ...] | None:
    t = torch.empty(4)
    return _as_sole_owner_sees(t)


def _calibrate() -> frozenset:
    """The counts of a tensor (plain or a view) that nothing else holds, when they differ from
    those of tensors that something else holds; empty when the probe cannot tell."""
    if _storage_use_count is None:
        return frozenset()
    with torch.no_grad():
        alone = {_view_alone(), _plain_alone()}
        held = []
        base = torch.empty(4)
        t = base.view(2, 2)
        held.append(_as_sole_owner_sees(t))  # the base is held by a name
        del base
        other = t.view(4)
        held.append(_as_sole_owner_sees(t))  # another view on the storage
        del other
        keep = [t]
        held.append(_as_sole_owner_sees(t))  # a list holds the view
        del keep
        plain = torch.empty(4)
        alias = plain
        held.append(_as_sole_owner_sees(plain))  # a second name
        del alias
        view = plain[:2]
        held.append(_as_sole_owner_sees(plain))  # a view of it exists
        del view
    if None in alone or alone & set(held) or len(alone) != 2:
        return frozenset()
    return frozenset(alone)


_ALONE = _calibrate()


def sole_owner(t: torch.Tensor) -> bool:
    """Whether ``t``, held by exactly one local name of the caller, is the only thing that
    holds its memory (see the module notes); False whenever that cannot be proven."""
    if (
        not _ALONE
        or type(t) is not torch.Tensor
        or t.requires_grad
        or t.layout != torch.strided
        or t.is_nested
    ):
        return False
    return _counts(t) in _ALONE
