"""A software prefetch for Numba kernels (LLVM's ``llvm.prefetch``), as hnswlib issues with ``_mm_prefetch``.

A graph walk reads vectors in random order, so nearly every distance starts with a cache miss. Asking for the next
neighbour's vector while computing the current distance hides much of that latency. The hint changes no result.
"""

from llvmlite import ir
from numba import config, types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch_row(typingctx, X, i):
    """Prefetch row ``i`` of a C-contiguous 2-D array (its first two cache lines), or element ``i`` of a 1-D one."""
    if not (isinstance(X, types.Array) and X.ndim in (1, 2) and isinstance(i, types.Integer)):
        return None
    sig = types.void(X, i)

    def codegen(context, builder, signature, args):
        x_val, i_val = args
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, x_val)
        idx = context.cast(builder, i_val, signature.args[1], types.intp)
        inds = [idx] + [ir.Constant(ir.IntType(64), 0)] * (aryty.ndim - 1)
        ptr = cgutils.get_item_pointer2(context, builder, data=ary.data,
                                        shape=cgutils.unpack_tuple(builder, ary.shape, aryty.ndim),
                                        strides=cgutils.unpack_tuple(builder, ary.strides, aryty.ndim),
                                        layout=aryty.layout, inds=inds)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        base = builder.bitcast(ptr, i8p)
        for line in range(2 if aryty.ndim == 2 else 1):  # the first lines; the hardware streams the rest
            addr = builder.gep(base, [ir.Constant(ir.IntType(64), 64 * line)]) if line else base
            builder.call(fn, [addr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


if config.DISABLE_JIT:  # plain Python (NUMBA_DISABLE_JIT=1): a hint has nothing to do

    def prefetch_row(X, i):  # noqa: F811 - the pure-Python stand-in
        """No-op stand-in when kernels run as plain Python."""
