"""The kernel side of `vecstore_ref.handoff`: a walk that ends while another thread is in a query's Python waits
for it without the GIL, so that it then takes a free GIL instead of sleeping on a held one.

The flags are read and written with atomic loads and stores (acquire and release): a plain load in a loop would
be hoisted out of it by LLVM, and the loop would never see the other thread clear its flag. Between reads the
core is told it is spinning (``pause`` on x86, ``yield`` on ARM), which frees resources for a sibling
hyper-thread.
"""

import platform

from llvmlite import ir
from numba import config, types
from numba.core import cgutils
from numba.extending import intrinsic

from .signatures import CACHE, FLAGS, INT, STEP, callee

# The longest wait of a walk for another thread's Python: 6 us on a 2-core Xeon whose ``pause`` takes 11 ns
# (about 30 us where it takes 60 ns). A query's Python takes 5-20 us; longer waits measured no better with two
# threads and worse with four on two cores (a spinning thread holds a core that a third thread's walk needs).
# Past it the thread takes the GIL the usual way, so a flag left set (a thread stopped inside its query's
# Python) costs at most this per query.
SPIN_LIMIT = 512


def _flag_pointer(context, builder, aryty, ary_val, i_val, i_ty):
    ary = context.make_array(aryty)(context, builder, ary_val)
    idx = context.cast(builder, i_val, i_ty, types.intp)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [idx], wraparound=False)


@intrinsic
def load_flag(typingctx, flags, i):
    """``flags[i]`` as an atomic load with acquire ordering (uint8)."""
    sig = types.uint8(flags, i)

    def codegen(context, builder, signature, args):
        ptr = _flag_pointer(context, builder, signature.args[0], args[0], args[1], signature.args[1])
        return builder.load_atomic(ptr, ordering="acquire", align=1)

    return sig, codegen


@intrinsic
def store_flag(typingctx, flags, i, value):
    """``flags[i] = value`` as an atomic store with release ordering (uint8)."""
    sig = types.void(flags, i, value)

    def codegen(context, builder, signature, args):
        ptr = _flag_pointer(context, builder, signature.args[0], args[0], args[1], signature.args[1])
        v = context.cast(builder, args[2], signature.args[2], types.uint8)
        builder.store_atomic(v, ptr, ordering="release", align=1)
        return context.get_dummy_value()

    return sig, codegen


_MACHINE = platform.machine().lower()


@intrinsic
def spin_pause(typingctx):
    """The CPU's spin-wait hint; nothing on other architectures."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        if _MACHINE in ("x86_64", "amd64", "i386", "i686"):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        elif _MACHINE in ("aarch64", "arm64"):
            builder.asm(ir.FunctionType(ir.VoidType(), []), "yield", "", [], side_effect=True)
        return context.get_dummy_value()

    return sig, codegen


@callee((FLAGS, INT), cache=CACHE, **STEP)
def leave_python(in_python, me):
    """The thread in slot ``me`` (-1: none) no longer holds the GIL (its walk starts)."""
    if me >= 0:
        store_flag(in_python, me, 0)


@callee((FLAGS, INT), cache=CACHE, **STEP)
def wait_for_python(in_python, me):
    """Before slot ``me`` (-1: no wait) returns to Python: wait (bounded) while another slot is in a query's
    Python. The caller marks its own slot again once it holds the GIL: marked before, a thread that then sleeps on
    a GIL held by a third thread would keep the others spinning for nothing."""
    if me < 0:
        return
    n = in_python.shape[0]
    for _ in range(SPIN_LIMIT):
        busy = False
        for j in range(n):
            if j != me and load_flag(in_python, j) != 0:
                busy = True
                break
        if not busy:
            break
        spin_pause()


if config.DISABLE_JIT:  # plain Python (NUMBA_DISABLE_JIT=1): the "kernel" holds the GIL, so never wait

    def leave_python(in_python, me):  # noqa: F811 - the pure-Python stand-in
        """Stand-in: nothing to hand over."""

    def wait_for_python(in_python, me):  # noqa: F811 - the pure-Python stand-in
        """Stand-in: nothing to wait for."""
