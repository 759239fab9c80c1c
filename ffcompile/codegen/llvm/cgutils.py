"""Small llvmlite IR-building helpers (in the spirit of Numba's cgutils)."""
from __future__ import annotations

from contextlib import contextmanager

from llvmlite import ir

from ...ir.symbolic import Affine, Sym
from .loop_metadata import mark_loop


@contextmanager
def for_range(builder: ir.IRBuilder, count: ir.Value, name: str = "i", unroll: bool = True):
    """Emit `for i in range(count)`: the with-body is the loop body, `i` is yielded.

    The index is a phi (no stack slot), and its increment is `nsw`, so the loop
    vectorizer sees a canonical counted loop. The builder ends after the loop.
    unroll=False: LLVM must not unroll it (loops tiled by hand: smallgemm.py).
    """
    ty = count.type
    entry = builder.block
    header = builder.append_basic_block(f"{name}.header")
    body = builder.append_basic_block(f"{name}.body")
    end = builder.append_basic_block(f"{name}.end")
    builder.branch(header)

    builder.position_at_end(header)
    index = builder.phi(ty, name=name)
    index.add_incoming(ir.Constant(ty, 0), entry)
    builder.cbranch(builder.icmp_signed("<", index, count), body, end)

    builder.position_at_end(body)
    yield index
    following = builder.add(index, ir.Constant(ty, 1), name=f"{name}.next", flags=["nsw"])
    index.add_incoming(following, builder.block)
    builder.branch(header)
    if not unroll:
        mark_loop(builder.module, index, unroll=False)

    builder.position_at_end(end)


def accumulate_loop(builder: ir.IRBuilder, count: int, initial: list, step, name: str, unroll: bool = True) -> list:
    """`accs = initial; for i in range(count): accs = step(i, accs)` for a count >= 1 (an int, or an
    i64 value known to be >= 1 at run time), as a loop whose index and accumulators are phis (registers, not
    stack slots), tested at the bottom. Returns the accumulators' final values; the
    builder ends after the loop. unroll=False: as for_range's."""
    i64 = ir.IntType(64)
    entry = builder.block
    body = builder.append_basic_block(f"{name}.body")
    end = builder.append_basic_block(f"{name}.end")
    builder.branch(body)
    builder.position_at_end(body)
    index = builder.phi(i64, name=name)
    index.add_incoming(ir.Constant(i64, 0), entry)
    accs = [builder.phi(value.type, name="acc") for value in initial]
    for acc, value in zip(accs, initial):
        acc.add_incoming(value, entry)
    final = step(index, accs)
    latch = builder.block
    for acc, value in zip(accs, final):
        acc.add_incoming(value, latch)
    following = builder.add(index, ir.Constant(i64, 1), flags=["nsw"])
    index.add_incoming(following, latch)
    limit = count if isinstance(count, ir.Value) else ir.Constant(i64, count)
    builder.cbranch(builder.icmp_signed("<", following, limit), body, end)
    if not unroll:
        mark_loop(builder.module, index, unroll=False)
    builder.position_at_end(end)
    return final


def compiled_compact(function: ir.Function) -> None:
    """Mark a function whose loops are tiled and vectorized by hand (the packed GEMM): under
    `optsize` LLVM's O3 pipeline neither unrolls nor re-vectorizes them, which took 2/3 of
    its compile time and bought no speed (packed_gemm.py says what was measured); `noinline`
    keeps it apart, since inlined into a caller without the attribute it is optimized in full."""
    function.attributes.add("optsize")
    function.attributes.add("noinline")


def batch_size(b: ir.IRBuilder) -> ir.Value:
    """The i64 batch size of a symbolic program, in the function `b` is building: its trailing
    parameter named `batch` (every function touching a B-dependent type takes one, #18)."""
    fn = b.function
    if not fn.args or fn.args[-1].name != "batch":
        raise AssertionError(f"{fn.name} has no trailing `batch` parameter but emits a symbolic size")
    return fn.args[-1]


def size_value(b: ir.IRBuilder, d) -> ir.Value:
    """The i64 value of a dimension: a constant for an int, `coef * batch` for a Sym."""
    i64 = ir.IntType(64)
    if not isinstance(d, Sym):
        return ir.Constant(i64, int(d))
    batch = batch_size(b)
    return batch if d.coef == 1 else b.mul(batch, ir.Constant(i64, d.coef), flags=["nsw"])


def affine_value(b: ir.IRBuilder, a) -> ir.Value:
    """The i64 value of an int, a Sym or an Affine (`const + per_batch * batch`: an offset in a
    symbolic program)."""
    a = Affine.of(a)
    if not a.per_batch:
        return ir.Constant(ir.IntType(64), a.const)
    batch = batch_size(b)
    scaled = batch if a.per_batch == 1 else b.mul(batch, ir.Constant(ir.IntType(64), a.per_batch), flags=["nsw"])
    return b.add(scaled, ir.Constant(ir.IntType(64), a.const), flags=["nsw"]) if a.const else scaled


def emit_closure(b: ir.IRBuilder, name: str, thunk_name: str, values: list[ir.Value], extras: tuple[str, ...],
                 emit_body, may_alias: tuple = ()) -> tuple[ir.Function, ir.Value]:
    """(thunk, ctx): code over `values` (computed in b's function) that native code calls back
    as `void thunk(i8* ctx, i64 extra...)`, ctx (an i8*) pointing at a struct of the values on
    b's stack. The thunk loads them and calls `void name(...values, i64 extra..., [i64 batch])`,
    whose body is emit_body(builder, values as its parameters, *extras): a function of its own,
    each distinct pointer among `values` a `noalias` parameter (pointers to one buffer must be
    the same value: the kernel functions' convention; but those in may_alias, which the body
    reaches otherwise too), so LLVM vectorizes it as it would the kernel. In a function with a
    trailing `batch` parameter (a symbolic program's, batch_size) it gets one too, after the
    extras. The thread pool's chunks (threadpool.emit_parallel_for) and the packed GEMM's
    epilogue callbacks are made so."""
    i32, i64 = ir.IntType(32), ir.IntType(64)
    caller = b.function
    batch = caller.args[-1] if caller.args and caller.args[-1].name == "batch" else None
    distinct = list({id(v): v for v in values if v is not batch}.values())
    stored = distinct + ([batch] if batch is not None else [])
    fields = ir.LiteralStructType([v.type for v in stored])
    with b.goto_entry_block():
        context = b.alloca(fields, name=f"{name}.ctx")

    def field(builder, ptr, k):
        return builder.gep(ptr, [ir.Constant(i32, 0), ir.Constant(i32, k)], inbounds=True)

    for k, value in enumerate(stored):
        b.store(value, field(b, context, k))
    module = b.module
    inner = ir.Function(module, ir.FunctionType(ir.VoidType(), [v.type for v in distinct] + [i64] * len(extras)
                                                + ([i64] if batch is not None else [])),
                        module.get_unique_name(name))
    inner.linkage = "internal"
    for arg, value in zip(inner.args, distinct):
        if isinstance(value.type, ir.PointerType) and not any(value is other for other in may_alias):
            arg.add_attribute("noalias")
    extra_args = inner.args[len(distinct):len(distinct) + len(extras)]
    for arg, extra in zip(extra_args, extras):
        arg.name = extra
    inner_of = {id(v): arg for v, arg in zip(distinct, inner.args)}
    if batch is not None:
        inner.args[-1].name = "batch"
        inner_of[id(batch)] = inner.args[-1]
    ib = ir.IRBuilder(inner.append_basic_block("entry"))
    emit_body(ib, [inner_of[id(v)] for v in values], *extra_args)
    ib.ret_void()
    thunk = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()] + [i64] * len(extras)),
                        module.get_unique_name(thunk_name))
    thunk.linkage = "internal"
    tb = ir.IRBuilder(thunk.append_basic_block("entry"))
    ctx = tb.bitcast(thunk.args[0], fields.as_pointer())
    loaded = [tb.load(field(tb, ctx, k)) for k in range(len(stored))]
    tb.call(inner, loaded[:len(distinct)] + list(thunk.args[1:]) + loaded[len(distinct):])
    tb.ret_void()
    return thunk, b.bitcast(context, ir.IntType(8).as_pointer())


def count_below(b: ir.IRBuilder, start: ir.Value, end: ir.Value, limit: ir.Value) -> ir.Value:
    """How many of the i64 items start..end - 1 are below limit (0 where none are): a chunk's
    share of the whole units, the partial last one left to its caller."""
    stop = b.select(b.icmp_signed("<", end, limit), end, limit)
    return b.select(b.icmp_signed("<", start, stop), b.sub(stop, start), ir.Constant(start.type, 0))


def libc(module: ir.Module, name: str, returns: ir.Type, parameters: list) -> ir.Function:
    """The C library's function `name`, declared in module once."""
    found = module.globals.get(name)
    return found if found is not None else ir.Function(module, ir.FunctionType(returns, parameters), name)


@contextmanager
def scratch_scope(b: ir.IRBuilder):
    """Temporary buffers for the with-body: it gets take(nbytes, align) -> an i8* to nbytes (an
    i64 value) aligned to align, all freed at the scope's end. Call take at the scope's own
    level (not in a branch inside it): the end frees what it returned.

    From malloc, not the stack: a program runs on its caller's thread, whose stack may be small
    (threading.stack_size(512 KiB) overflowed on the packed GEMM's packs and the process died).
    glibc serves the same size again from the thread's arena, so a repeated call faults in no
    page; aligned here, since aligned_alloc's blocks landed higher in a pool worker's arena at
    each call (255-510 fresh pages zeroed a call: packed_gemm.py). On the stack only where
    malloc fails (released at the end too)."""
    i8p, i64 = ir.IntType(8).as_pointer(), ir.IntType(64)
    saved = b.call(b.module.declare_intrinsic("llvm.stacksave", fnty=ir.FunctionType(i8p, [])), [])
    taken = []

    def take(nbytes: ir.Value, align: int) -> ir.Value:
        size = b.add(nbytes, ir.Constant(i64, align - 1))
        heap = b.call(libc(b.module, "malloc", i8p, [i64]), [size])
        found = b.block
        with b.if_then(b.icmp_unsigned("==", heap, ir.Constant(i8p, None))):
            stack = b.alloca(ir.IntType(8), size=size, name="scratch.stack")
            fallback = b.block
        start = b.phi(i8p, name="scratch")
        start.add_incoming(heap, found)
        start.add_incoming(stack, fallback)
        taken.append(heap)
        offset = b.and_(b.sub(ir.Constant(i64, 0), b.ptrtoint(start, i64)), ir.Constant(i64, align - 1))
        return b.gep(start, [offset], inbounds=True)

    yield take
    for heap in taken:  # free(NULL), where the stack served, does nothing
        b.call(libc(b.module, "free", ir.VoidType(), [i8p]), [heap])
    b.call(b.module.declare_intrinsic("llvm.stackrestore", fnty=ir.FunctionType(ir.VoidType(), [i8p])), [saved])
