"""numba intrinsics for the CPU kernels: bit casts and tensors passed by address.

Imported only by modules that already import numba (:mod:`dropkit.rng.cpu`,
:mod:`dropkit.mc.summary_kernel`).
"""

from __future__ import annotations

from numba.core import types
from numba.extending import intrinsic


def bitcast(source: types.Type, target: types.Type):
    """An intrinsic ``f(x)``: the ``target`` value with the bits of the ``source`` value ``x``
    (one LLVM ``bitcast``: free in registers and vectorisable), e.g. the uint32 bits of a
    float32 or the float64 whose bits are a uint64."""

    @intrinsic
    def cast(typingctx, x):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen

    cast.__doc__ = f"The {target} with the bits of a {source}."
    return cast


def address_of(kind: types.Type):
    """An intrinsic ``at(address)``: the int ``address`` as a pointer to ``kind`` elements,
    for ``numba.carray(at(address), n)`` over a tensor's memory (``tensor.data_ptr()``); the
    caller keeps the tensor alive, contiguous and of that dtype for the call."""

    @intrinsic
    def at(typingctx, address):
        pointer = types.CPointer(kind)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(pointer))

        return pointer(types.intp), codegen

    return at
