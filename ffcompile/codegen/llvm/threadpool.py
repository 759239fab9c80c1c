"""One persistent pool of native worker threads, owner of the cores for generated code.

A kernel that splits its work (`emit_parallel_for`: units of work, at least `grain` a chunk) calls

    void ffc_pool_parallel_for(void (*body)(i8* ctx, i64 start, i64 end), i8* ctx, i64 n, i64 grain)

through the module global POOL_SLOT, which the backend fills after loading the program
(null in an exported library: the body then runs on the caller's thread, whole).
[0, n) is cut into at most CHUNKS_PER_THREAD x `threads` contiguous chunks of at least `grain`
items (a multiple of `threads` where there are more: none waits for a last odd one); the
caller runs chunk 0, worker w chunk w + 1, and the call returns when all are done. The
chunks are a pure function of (n, grain, threads), and a kernel's body computes each
item the same way whichever chunk holds it, so results do not depend on the thread count.

The pool itself is LLVM IR over pthreads (libc's mutex, condition variables, create and
join: what every glibc process has; no OpenMP runtime, whose workers spin for 0.2 s on
their own schedule), compiled once per process. Workers spin for SPIN_CYCLES (the next
kernel of the same call, or the next call of a serving loop, finds them awake) before
sleeping on a condition variable, so an idle pool costs no cores; after the first ~5 us
each turn of a spin yields the core (YIELD_AFTER_CYCLES). They spin on plain
loads, without x86's `pause`: a virtual machine may trap pause loops (measured here: 59 ns
a pause, and 2000-pause spins made a 2-thread GEMV 8x slower than one thread). One job
runs at a time: a parallel_for that finds the pool busy (another Python thread's program,
or a body calling back in) runs its body serially instead of waiting, so nothing deadlocks.

Threads: FFCOMPILE_NUM_THREADS, else the cores this process may run on;
`set_num_threads` changes it (1: no workers). Where the threads take every one of those
CPUs, each worker is pinned to one, the first left to the caller (worker_cpus;
FFCOMPILE_PIN_THREADS=0 leaves them floating). BLAS (blas.py) stays at one thread, run on
the caller's thread while the workers sleep: the pool is the one owner of the cores.
A forked child starts with no workers (a fork copies only the calling thread).
"""
from __future__ import annotations

import atexit
import ctypes
import os
import threading

from llvmlite import ir

from .cache import runtime_module
from .cgutils import emit_closure
from .target import object_code

POOL_SLOT = "ffc_parallel_for"  # the module global a program calls the pool through
POOL_FUNCTIONS = ("ffc_pool_parallel_for", "ffc_pool_start", "ffc_pool_handles", "ffc_pool_pin", "ffc_pool_stop",
                  "ffc_pool_forget", "ffc_pool_workers")
THREADS_VARIABLE = "FFCOMPILE_NUM_THREADS"
PIN_VARIABLE = "FFCOMPILE_PIN_THREADS"  # "0": workers float over every CPU the process may use
CPU_SET_WORDS = 16  # glibc's cpu_set_t: 1024 CPUs in 64-bit words
MAX_THREADS = 256
# Each worker's stack, whatever `ulimit -s` says (unlimited gives threads 2 MiB): a packed GEMM
# chunk packs on its stack where malloc fails, up to packed_gemm.STACK_BYTES (2 MiB).
WORKER_STACK_BYTES = 8 << 20
SPIN_CYCLES = 200_000  # ~50-100 us at 2-4 GHz
# Spinning past this many cycles (~5 us) calls sched_yield each time round: when another process
# holds one of 2 cores, the caller and a worker share the other, and a spinning thread kept the
# one with work off it (deep step at 256 bits, a busy loop on one core: 7.9-9.0 ms, against 6.5-6.9
# at 1 thread; with the yield 6.7-7.4; without the busy loop 3.7-3.9 either way).
YIELD_AFTER_CYCLES = 20_000
CHUNKS_PER_THREAD = 2  # chunks per thread (of at least `grain` items each): a preempted thread's are taken over

I8P = ir.IntType(8).as_pointer()
I32 = ir.IntType(32)
I64 = ir.IntType(64)
VOID = ir.VoidType()
BODY_TYPE = ir.FunctionType(VOID, [I8P, I64, I64])
PARALLEL_FOR_TYPE = ir.FunctionType(VOID, [BODY_TYPE.as_pointer(), I8P, I64, I64])
SEQ = "seq_cst"


# ----------------------------------------------------------------- in generated programs


def chunk_count(n: int, grain: int, threads: int) -> int:
    """The chunks the pool cuts [0, n) into (ffc_pool_parallel_for's rule, in Python: the
    packed GEMM's block sizes balance them): at most CHUNKS_PER_THREAD a thread of at least
    `grain` items, a whole number a thread where there are more than threads."""
    chunks = min(n // grain, threads * CHUNKS_PER_THREAD)
    return chunks - chunks % threads if chunks > threads else chunks


def pool_slot(module: ir.Module) -> ir.GlobalVariable:
    """The external global a program reads ffc_pool_parallel_for's address from."""
    slot = module.globals.get(POOL_SLOT)
    if slot is None:
        slot = ir.GlobalVariable(module, I8P, POOL_SLOT)
        slot.initializer = ir.Constant(I8P, None)
    return slot


def emit_parallel_for(b: ir.IRBuilder, name: str, values: list[ir.Value], n, grain, emit_body,
                      may_alias: tuple = ()) -> None:
    """emit_body(builder, values, start, end) over units [0, n), split across the pool when
    n >= 2 * grain. n and grain are ints or i64 values (a symbolic program's sizes known at
    call time: then the test is made at run time). The body is its own function,
    `void name(...values, i64 start, i64 end)` (cgutils.emit_closure: its pointers `noalias`
    but those in may_alias; a trailing `batch` parameter where the caller has one), which the
    pool calls through `void name.chunk(i8* ctx, i64 start, i64 end)`."""
    body, pointer = emit_closure(b, name, f"{name}.chunk", values, ("start", "end"), emit_body, may_alias)

    count = n if isinstance(n, ir.Value) else ir.Constant(I64, n)
    grain = grain if isinstance(grain, ir.Value) else ir.Constant(I64, grain)
    zero = ir.Constant(I64, 0)
    if isinstance(count, ir.Constant) and isinstance(grain, ir.Constant) and count.constant < 2 * grain.constant:
        b.call(body, [pointer, zero, count])
        return
    pool = b.load(pool_slot(b.module))
    serial_only = b.icmp_unsigned("==", pool, ir.Constant(I8P, None))
    if not isinstance(count, ir.Constant) or not isinstance(grain, ir.Constant):  # decided at run time
        small = b.icmp_unsigned("<", count, b.shl(grain, ir.Constant(I64, 1)))
        serial_only = b.or_(serial_only, small)
    with b.if_else(serial_only) as (serial, parallel):
        with serial:
            b.call(body, [pointer, zero, count])
        with parallel:
            b.call(b.bitcast(pool, PARALLEL_FOR_TYPE.as_pointer()), [body, pointer, count, grain])


# ----------------------------------------------------------------- the pool's own module


class _PoolModule:
    """Builds the pool's IR: state in internal globals, five exported functions."""

    def __init__(self):
        m = self.m = ir.Module("ffcompile.threadpool")
        self.state = {name: self._global(name, I64) for name in
                      ("gen", "ticket", "finished", "workers", "n", "chunks", "busy", "quit", "inited")}
        self.state["fn"] = self._global("fn", BODY_TYPE.as_pointer())
        self.state["ctx"] = self._global("ctx", I8P)
        # pthread_mutex_t / pthread_cond_t: 40 and 48 bytes on x86-64 glibc, 48 on aarch64.
        for name in ("mutex", "work", "done"):
            self.state[name] = self._global(name, ir.ArrayType(ir.IntType(8), 64), align=64)
        self.state["handles"] = self._global("handles", ir.ArrayType(I64, MAX_THREADS))
        # Set by _pin_workers: whether workers are pinned, the CPUs they are pinned to, and the
        # others (cpu_set_t bit masks), where a caller found on a worker's CPU moves (_escape).
        self.state["pinned"] = self._global("pinned", I64)
        for name in ("worker_cpus", "free_cpus"):
            self.state[name] = self._global(name, ir.ArrayType(I64, CPU_SET_WORDS))
        self.libc = {
            "pthread_mutex_init": ir.FunctionType(I32, [I8P, I8P]),
            "pthread_mutex_lock": ir.FunctionType(I32, [I8P]),
            "pthread_mutex_unlock": ir.FunctionType(I32, [I8P]),
            "pthread_cond_init": ir.FunctionType(I32, [I8P, I8P]),
            "pthread_cond_wait": ir.FunctionType(I32, [I8P, I8P]),
            "pthread_cond_broadcast": ir.FunctionType(I32, [I8P]),
            "pthread_create": ir.FunctionType(I32, [I64.as_pointer(), I8P, ir.FunctionType(I8P, [I8P]).as_pointer(),
                                                    I8P]),
            "pthread_join": ir.FunctionType(I32, [I64, I8P.as_pointer()]),
            "pthread_attr_init": ir.FunctionType(I32, [I8P]),
            "pthread_attr_setstacksize": ir.FunctionType(I32, [I8P, I64]),
            "pthread_attr_destroy": ir.FunctionType(I32, [I8P]),
            "sched_yield": ir.FunctionType(I32, []),
            "sched_getcpu": ir.FunctionType(I32, []),
            "sched_getaffinity": ir.FunctionType(I32, [I32, I64, I64.as_pointer()]),
            "sched_setaffinity": ir.FunctionType(I32, [I32, I64, I64.as_pointer()]),
        }
        self.libc = {name: ir.Function(m, fty, name) for name, fty in self.libc.items()}
        self.clock = m.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(I64, []))
        self.run_chunks = self._run_chunks()
        self.escape = self._escape()
        self._worker()
        self._parallel_for()
        self._start()
        self._handles()
        self._pin()
        self._stop()
        self._forget()
        self._workers()

    def _global(self, name, ty, align=None):
        g = ir.GlobalVariable(self.m, ty, f"pool.{name}")
        g.linkage = "internal"
        g.initializer = ir.Constant(ty, None)
        if align:
            g.align = align
        return g

    def _bytes(self, b, name):
        return b.bitcast(self.state[name], I8P)

    def _call(self, b, name, *args):
        return b.call(self.libc[name], list(args))

    def _lock(self, b):
        self._call(b, "pthread_mutex_lock", self._bytes(b, "mutex"))

    def _unlock(self, b):
        self._call(b, "pthread_mutex_unlock", self._bytes(b, "mutex"))

    def _load(self, b, name):
        return b.load_atomic(self.state[name], SEQ, 8)

    def _store(self, b, name, value):
        b.store_atomic(value if isinstance(value, ir.Value) else ir.Constant(I64, value), self.state[name], SEQ, 8)

    def _function(self, name, fty, exported=True):
        fn = ir.Function(self.m, fty, name)
        if not exported:
            fn.linkage = "internal"
        return fn, ir.IRBuilder(fn.append_basic_block("entry"))

    def _while(self, b, condition, body, name):
        """while condition(b): body(b)"""
        head, loop, end = (b.append_basic_block(f"{name}.{part}") for part in ("head", "body", "end"))
        b.branch(head)
        b.position_at_end(head)
        b.cbranch(condition(b), loop, end)
        b.position_at_end(loop)
        body(b)
        b.branch(head)
        b.position_at_end(end)

    def _spin_until(self, b, condition, name):
        """Spin while not condition(b), for at most SPIN_CYCLES time-stamp-counter cycles."""
        start = b.call(self.clock, [])

        def spinning(b):
            elapsed = b.sub(b.call(self.clock, []), start)
            return b.and_(b.not_(condition(b)), b.icmp_unsigned("<", elapsed, ir.Constant(I64, SPIN_CYCLES)))

        def give_way(b):  # past YIELD_AFTER_CYCLES, to a thread of ours waiting for this core
            late = b.icmp_unsigned(">", b.sub(b.call(self.clock, []), start), ir.Constant(I64, YIELD_AFTER_CYCLES))
            with b.if_then(late):
                self._call(b, "sched_yield")

        self._while(b, spinning, give_way, name)

    def _acquire_busy(self, b):
        """Take the pool for this job (spinning and yielding meanwhile: start/stop only)."""
        def taken(b):
            pair = b.cmpxchg(self.state["busy"], ir.Constant(I64, 0), ir.Constant(I64, 1), SEQ, SEQ)
            return b.extract_value(pair, 1)
        self._while(b, lambda b: b.not_(taken(b)), lambda b: self._call(b, "sched_yield"), "acquire")

    def _run_chunks(self):
        """run_chunks(g): claim chunks of job g (while it is the posted one and has some left)
        and run them, counting each one finished; the one that finishes the last chunk
        wakes the caller if it sleeps. A chunk is claimed by a compare-and-swap of the ticket
        (generation << 32 | next chunk), so a worker that wakes late, after job g ended,
        claims nothing, and the job fields it read belong to the job it claimed from."""
        fn, b = self._function("pool.run_chunks", ir.FunctionType(VOID, [I64]), exported=False)
        mine = fn.args[0]
        loop, claim, done = (b.append_basic_block(name) for name in ("loop", "claim", "done"))
        b.branch(loop)
        b.position_at_end(loop)
        ticket = self._load(b, "ticket")
        chunks = self._load(b, "chunks")
        index = b.and_(ticket, ir.Constant(I64, 0xFFFFFFFF))
        current = b.icmp_unsigned("==", b.lshr(ticket, ir.Constant(I64, 32)), mine)
        b.cbranch(b.and_(current, b.icmp_unsigned("<", index, chunks)), claim, done)
        b.position_at_end(claim)
        n, body, ctx = self._load(b, "n"), b.load(self.state["fn"]), b.load(self.state["ctx"])
        pair = b.cmpxchg(self.state["ticket"], ticket, b.add(ticket, ir.Constant(I64, 1)), SEQ, SEQ)
        with b.if_then(b.extract_value(pair, 1)):
            start = b.udiv(b.mul(n, index), chunks)
            end = b.udiv(b.mul(n, b.add(index, ir.Constant(I64, 1))), chunks)
            b.call(body, [ctx, start, end])
            finished = b.atomic_rmw("add", self.state["finished"], ir.Constant(I64, 1), SEQ)
            with b.if_then(b.icmp_unsigned("==", b.add(finished, ir.Constant(I64, 1)), chunks)):
                self._lock(b)
                self._call(b, "pthread_cond_broadcast", self._bytes(b, "done"))
                self._unlock(b)
        b.branch(loop)
        b.position_at_end(done)
        b.ret_void()
        return fn

    def _worker(self):
        """Worker: wait for a new generation (spin, then sleep), help with its chunks; return
        when told to quit."""
        self.worker, b = self._function("pool.worker", ir.FunctionType(I8P, [I8P]), exported=False)
        mine = b.alloca(I64)
        b.store(ir.Constant(I64, 0), mine)  # start() resets the generation to 0 before creating workers
        loop = b.append_basic_block("loop")
        b.branch(loop)
        b.position_at_end(loop)

        def new_job(b):
            return b.icmp_unsigned("!=", self._load(b, "gen"), b.load(mine))

        self._spin_until(b, new_job, "spin")
        self._lock(b)
        self._while(b, lambda b: b.and_(b.not_(new_job(b)), b.icmp_unsigned("==", self._load(b, "quit"),
                                                                              ir.Constant(I64, 0))),
                    lambda b: self._call(b, "pthread_cond_wait", self._bytes(b, "work"), self._bytes(b, "mutex")),
                    "sleep")
        quitting = b.icmp_unsigned("!=", self._load(b, "quit"), ir.Constant(I64, 0))
        self._unlock(b)
        with b.if_then(quitting):
            b.ret(ir.Constant(I8P, None))
        b.store(self._load(b, "gen"), mine)
        b.call(self.run_chunks, [b.load(mine)])
        b.branch(loop)

    def _escape(self):
        """void escape(): the calling thread, found on a worker's CPU, moves to one of the other
        CPUs its own mask allows (set to their intersection, then back to its own: the kernel
        migrates it at the first call, and the second leaves it there). The scheduler left a
        caller woken on a worker's CPU there for tens of ms beside an idle one, the two taking
        turns (_pin_workers)."""
        fn, b = self._function("ffc_pool_escape", ir.FunctionType(VOID, []), exported=False)
        cpu = b.sext(self._call(b, "sched_getcpu"), I64)
        words = ir.Constant(I64, CPU_SET_WORDS)
        inside = b.and_(b.icmp_signed(">=", cpu, ir.Constant(I64, 0)), b.icmp_signed("<", cpu, ir.Constant(I64, 64 * CPU_SET_WORDS)))
        done = fn.append_basic_block("done")
        check = fn.append_basic_block("check")
        b.cbranch(inside, check, done)
        b.position_at_end(check)
        word = b.load(b.gep(self.state["worker_cpus"], [ir.Constant(I64, 0), b.lshr(cpu, ir.Constant(I64, 6))]))
        taken = b.trunc(b.lshr(word, b.and_(cpu, ir.Constant(I64, 63))), ir.IntType(1))
        move = fn.append_basic_block("move")
        b.cbranch(taken, move, done)
        b.position_at_end(move)
        own, allowed = b.alloca(I64, words), b.alloca(I64, words)
        pid, size = ir.Constant(I32, 0), ir.Constant(I64, 8 * CPU_SET_WORDS)
        read = b.icmp_signed("==", self._call(b, "sched_getaffinity", pid, size, own), ir.Constant(I32, 0))
        apply = fn.append_basic_block("apply")
        b.cbranch(read, apply, done)  # more CPUs than a cpu_set_t holds: stay
        b.position_at_end(apply)
        any_free = ir.Constant(I64, 0)
        for w in range(CPU_SET_WORDS):
            index = [ir.Constant(I64, w)]
            free = b.and_(b.load(b.gep(own, index)), b.load(b.gep(self.state["free_cpus"], [ir.Constant(I64, 0), *index])))
            b.store(free, b.gep(allowed, index))
            any_free = b.or_(any_free, free)
        with b.if_then(b.icmp_unsigned("!=", any_free, ir.Constant(I64, 0))):
            self._call(b, "sched_setaffinity", pid, size, allowed)
            self._call(b, "sched_setaffinity", pid, size, own)
        b.branch(done)
        b.position_at_end(done)
        b.ret_void()
        return fn

    def _parallel_for(self):
        fn, b = self._function("ffc_pool_parallel_for", PARALLEL_FOR_TYPE)
        body, ctx, n, grain = fn.args

        def serial(b):
            b.call(body, [ctx, ir.Constant(I64, 0), n])
            b.ret_void()

        pair = b.cmpxchg(self.state["busy"], ir.Constant(I64, 0), ir.Constant(I64, 1), SEQ, SEQ)
        with b.if_then(b.not_(b.extract_value(pair, 1))):
            serial(b)
        workers = self._load(b, "workers")
        chunks = b.udiv(n, grain)
        threads = b.add(workers, ir.Constant(I64, 1))
        most = b.mul(threads, ir.Constant(I64, CHUNKS_PER_THREAD))
        chunks = b.select(b.icmp_unsigned("<", most, chunks), most, chunks)
        # A whole number of chunks per thread where there are more chunks than threads: 3 equal
        # chunks on 2 threads took as long as 4 (smallgemm's 64x256x256 with B transposed, 256 bits:
        # 48.6 us, against 38.4 us in 2 or 4).
        spare = b.urem(chunks, threads)
        chunks = b.select(b.icmp_unsigned(">", chunks, threads), b.sub(chunks, spare), chunks)
        with b.if_then(b.or_(b.icmp_unsigned("<=", chunks, ir.Constant(I64, 1)),
                             b.icmp_unsigned("==", workers, ir.Constant(I64, 0)))):
            self._store(b, "busy", 0)
            serial(b)
        with b.if_then(b.icmp_unsigned("!=", b.load(self.state["pinned"]), ir.Constant(I64, 0))):
            b.call(self.escape, [])
        self._lock(b)
        # The new ticket first: a worker still claiming from the last job may have read its ticket
        # and not yet the job's fields. Stored after them, the ticket let its compare-and-swap
        # succeed on this job's fields (a larger chunk count): a chunk counted twice, `finished`
        # past `chunks`, and the caller waiting forever (seen with another process on a core).
        gen = b.and_(b.add(self._load(b, "gen"), ir.Constant(I64, 1)), ir.Constant(I64, 0xFFFFFFFF))
        self._store(b, "ticket", b.shl(gen, ir.Constant(I64, 32)))
        b.store(body, self.state["fn"])
        b.store(ctx, self.state["ctx"])
        self._store(b, "n", n)
        self._store(b, "chunks", chunks)
        self._store(b, "finished", 0)
        self._store(b, "gen", gen)
        self._call(b, "pthread_cond_broadcast", self._bytes(b, "work"))
        self._unlock(b)
        b.call(self.run_chunks, [gen])

        def all_done(b):
            return b.icmp_unsigned("==", self._load(b, "finished"), chunks)

        self._spin_until(b, all_done, "spin")
        self._lock(b)
        self._while(b, lambda b: b.not_(all_done(b)),
                    lambda b: self._call(b, "pthread_cond_wait", self._bytes(b, "done"), self._bytes(b, "mutex")),
                    "wait")
        self._unlock(b)
        self._store(b, "busy", 0)
        b.ret_void()

    def _start(self):
        """i64 ffc_pool_start(i64 workers): create them (after ffc_pool_stop); the number created."""
        fn, b = self._function("ffc_pool_start", ir.FunctionType(I64, [I64]))
        self._acquire_busy(b)
        with b.if_then(b.icmp_unsigned("==", self._load(b, "inited"), ir.Constant(I64, 0))):
            for name, init in (("mutex", "pthread_mutex_init"), ("work", "pthread_cond_init"),
                               ("done", "pthread_cond_init")):
                self._call(b, init, self._bytes(b, name), ir.Constant(I8P, None))
            self._store(b, "inited", 1)
        for name in ("gen", "ticket", "quit", "workers"):
            self._store(b, name, 0)
        created = b.alloca(I64)
        b.store(ir.Constant(I64, 0), created)
        attributes = b.alloca(ir.ArrayType(ir.IntType(8), 64))  # a pthread_attr_t (56 bytes in glibc)
        attributes.align = 16
        attributes = b.bitcast(attributes, I8P)
        self._call(b, "pthread_attr_init", attributes)
        self._call(b, "pthread_attr_setstacksize", attributes, ir.Constant(I64, WORKER_STACK_BYTES))
        wanted = b.select(b.icmp_unsigned("<", fn.args[0], ir.Constant(I64, MAX_THREADS)), fn.args[0],
                          ir.Constant(I64, MAX_THREADS))

        head, body, end = (b.append_basic_block(f"create.{p}") for p in ("head", "body", "end"))
        b.branch(head)
        b.position_at_end(head)
        k = b.load(created)
        b.cbranch(b.icmp_unsigned("<", k, wanted), body, end)
        b.position_at_end(body)
        handle = b.gep(self.state["handles"], [ir.Constant(I64, 0), k])
        rc = self._call(b, "pthread_create", handle, attributes, self.worker, b.inttoptr(k, I8P))
        ok = b.icmp_unsigned("==", rc, ir.Constant(I32, 0))
        b.store(b.add(k, b.zext(ok, I64)), created)  # counts the threads that exist
        b.cbranch(ok, head, end)
        b.position_at_end(end)
        self._call(b, "pthread_attr_destroy", attributes)
        count = b.load(created)
        self._store(b, "workers", count)
        self._store(b, "busy", 0)
        b.ret(count)

    def _handles(self):
        """i64* ffc_pool_handles(): the workers' pthread_t, for pinning them (_pin_workers)."""
        fn, b = self._function("ffc_pool_handles", ir.FunctionType(I64.as_pointer(), []))
        b.ret(b.gep(self.state["handles"], [ir.Constant(I64, 0), ir.Constant(I64, 0)]))

    def _pin(self):
        """void ffc_pool_pin(i64 pinned, i64* worker_cpus, i64* free_cpus): what _escape reads."""
        fn, b = self._function("ffc_pool_pin", ir.FunctionType(VOID, [I64, I64.as_pointer(), I64.as_pointer()]))
        pinned, workers, free = fn.args
        for source, name in ((workers, "worker_cpus"), (free, "free_cpus")):
            for w in range(CPU_SET_WORDS):
                word = b.load(b.gep(source, [ir.Constant(I64, w)]))
                b.store(word, b.gep(self.state[name], [ir.Constant(I64, 0), ir.Constant(I64, w)]))
        b.store(pinned, self.state["pinned"])
        b.ret_void()

    def _stop(self):
        """void ffc_pool_stop(): wake every worker with quit set and join them all."""
        fn, b = self._function("ffc_pool_stop", ir.FunctionType(VOID, []))
        self._acquire_busy(b)
        with b.if_then(b.icmp_unsigned("!=", self._load(b, "workers"), ir.Constant(I64, 0))):
            self._lock(b)
            self._store(b, "quit", 1)
            self._call(b, "pthread_cond_broadcast", self._bytes(b, "work"))
            self._unlock(b)
            k = b.alloca(I64)
            b.store(ir.Constant(I64, 0), k)

            def join(b):
                handle = b.load(b.gep(self.state["handles"], [ir.Constant(I64, 0), b.load(k)]))
                self._call(b, "pthread_join", handle, ir.Constant(I8P.as_pointer(), None))
                b.store(b.add(b.load(k), ir.Constant(I64, 1)), k)

            self._while(b, lambda b: b.icmp_unsigned("<", b.load(k), self._load(b, "workers")), join, "join")
            self._store(b, "workers", 0)
            self._store(b, "quit", 0)
        self._store(b, "busy", 0)
        b.ret_void()

    def _forget(self):
        """void ffc_pool_forget(): in a forked child, which has none of the workers (and maybe a
        mutex some parent thread held): no workers, not busy, primitives initialized anew."""
        fn, b = self._function("ffc_pool_forget", ir.FunctionType(VOID, []))
        for name in ("workers", "busy", "inited", "quit"):
            self._store(b, name, 0)
        b.ret_void()

    def _workers(self):
        fn, b = self._function("ffc_pool_workers", ir.FunctionType(I64, []))
        b.ret(self._load(b, "workers"))


# ----------------------------------------------------------------- the Python side


_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    """A parent thread inside set_num_threads at the fork held _lock, and no thread of the
    child ever releases it: the child's set_num_threads hung. A new lock for the child."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)
_library = None  # the pool's JitModule: never released (workers run its code)
_functions: dict[str, ctypes._CFuncPtr] = {}
_threads: int | None = None  # what the pool was started with (None: not yet)


def default_threads() -> int:
    """FFCOMPILE_NUM_THREADS if set (a positive integer), else the cores this process may use."""
    value = os.environ.get(THREADS_VARIABLE, "").strip()
    if value:
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(f"{THREADS_VARIABLE}={value!r}: expected a positive integer number of threads")
        return threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_cpus(workers: int) -> list[int]:
    """The CPU each worker is pinned to where the pool's threads (workers and the caller) are
    at least the CPUs this process may use: those CPUs in order, the first left to the caller,
    wrapping round past the last. None (workers float) with fewer threads: the pins would be
    the same in every process (MPI ranks, a multiprocessing pool), stacking their workers on
    the lowest CPUs while the others idled; with one CPU; with FFCOMPILE_PIN_THREADS=0."""
    if os.environ.get(PIN_VARIABLE, "").strip() == "0" or not hasattr(os, "sched_getaffinity"):
        return []
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or workers + 1 < len(cpus):
        return []
    return [cpus[(w + 1) % len(cpus)] for w in range(workers)]


def _cpu_set(cpus) -> list[int]:
    """A cpu_set_t's 64-bit words with these CPUs' bits."""
    words = [0] * CPU_SET_WORDS
    for cpu in cpus:
        if cpu < 64 * CPU_SET_WORDS:
            words[cpu // 64] |= 1 << (cpu % 64)
    return words


def _pin_workers(workers: int) -> None:
    """Pin each worker to its CPU (worker_cpus), and have a caller found on one of those move
    off it (the pool's escape, where a CPU is left over). Unpinned, a worker woken from its
    sleep landed on the caller's CPU, or the caller woke on the worker's, and the two took turns
    on one core for tens of ms while the other idled: mnist's step at 256 bits, 8 steps after a
    0.25 s pause, 3.2-3.6 ms in half the rounds (the process at 1.0 CPU/wall, one CPU idle)
    against 1.7-2.1; the benchmark's bimodal mnist and deep steps. Pinning the workers alone
    left the caller waking on the worker's CPU. A refusal (a container's policy) leaves a
    worker floating."""
    cpus = worker_cpus(workers)
    words = ctypes.c_uint64 * CPU_SET_WORDS
    if not cpus:
        _functions["ffc_pool_pin"](0, words(), words())
        return
    handles = (ctypes.c_uint64 * MAX_THREADS).from_address(_functions["ffc_pool_handles"]())
    set_affinity = ctypes.CDLL(None).pthread_setaffinity_np
    set_affinity.argtypes = [ctypes.c_uint64, ctypes.c_size_t, ctypes.c_void_p]
    refused = False
    for worker, cpu in enumerate(cpus):
        mask = words(*_cpu_set([cpu]))
        refused |= set_affinity(handles[worker], ctypes.sizeof(mask), ctypes.addressof(mask)) != 0
    free = set(os.sched_getaffinity(0)) - set(cpus)
    # Where a pin was refused, a caller has no worker's CPU to leave: no escapes.
    _functions["ffc_pool_pin"](int(bool(free) and not refused), words(*_cpu_set(cpus)), words(*_cpu_set(free)))


def _load() -> None:
    global _library
    if _library is not None:
        return
    _library = runtime_module("thread pool", POOL_FUNCTIONS, lambda: object_code(_PoolModule().m))
    signatures = {"ffc_pool_start": ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64),
                  "ffc_pool_handles": ctypes.CFUNCTYPE(ctypes.c_void_p),
                  "ffc_pool_pin": ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.POINTER(ctypes.c_uint64),
                                                   ctypes.POINTER(ctypes.c_uint64)),
                  "ffc_pool_stop": ctypes.CFUNCTYPE(None),
                  "ffc_pool_forget": ctypes.CFUNCTYPE(None),
                  "ffc_pool_workers": ctypes.CFUNCTYPE(ctypes.c_int64)}
    for name, cfunc in signatures.items():
        _functions[name] = cfunc(_library.address(name))
    # Workers spin in the pool's code: stop them before the interpreter tears anything down.
    atexit.register(_functions["ffc_pool_stop"])
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forget_after_fork)


def _forget_after_fork() -> None:
    global _threads
    _functions["ffc_pool_forget"]()
    _threads = None


def set_num_threads(threads: int) -> None:
    """Threads generated code splits its parallel kernels over (the calling thread counts as
    one): 1 runs everything on the caller. Takes effect for the next call of any program."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"set_num_threads: expected a positive integer, got {threads!r}")
    if threads > MAX_THREADS:
        raise ValueError(f"set_num_threads: at most {MAX_THREADS} threads, got {threads}")
    global _threads
    with _lock:
        _load()
        _functions["ffc_pool_stop"]()
        created = _functions["ffc_pool_start"](threads - 1)
        _threads = 1 + created
        _pin_workers(created)
    if created != threads - 1:
        raise RuntimeError(f"set_num_threads({threads}): the system created only {created} worker threads")


def get_num_threads() -> int:
    """The threads parallel kernels use: set_num_threads's choice, else default_threads()."""
    return _threads if _threads is not None else default_threads()


def parallel_for_address() -> int:
    """The address of ffc_pool_parallel_for, the pool started (default_threads()) if not yet."""
    if _threads is None:
        set_num_threads(default_threads())
    return _library.address("ffc_pool_parallel_for")


def fill_pool_slot(jit) -> None:
    """Point a loaded module's POOL_SLOT (target.JitModule) at the pool's parallel-for."""
    ctypes.c_void_p.from_address(jit.address(POOL_SLOT)).value = parallel_for_address()


def running_workers() -> int:
    """Worker threads alive now (0 before the pool starts)."""
    return _functions["ffc_pool_workers"]() if _functions else 0
