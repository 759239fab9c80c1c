"""Ahead-of-time export: a Schedule as an object file, a shared library and a C header.

    export(schedule, plan, out_dir, name) -> ExportedLibrary

writes `out_dir/name.o`, `out_dir/libname.so` (linked by the system C
compiler, `$CC` or `cc`) and `out_dir/name.h`, which declares

    void name_entry(void **args);   args = [arena, input 0, ..., output 0, ...]
    void name_set_sgemm(void *fn);  void name_set_dgemm(void *fn);

and the buffer sizes as macros: NAME_ARENA_BYTES (NAME_ALIGNMENT-aligned
memory the caller provides, reused across calls), and per input / output
slot its element type, rank, shape, element count and bytes, also as
initializer lists (NAME_INPUT_BYTES = {...}). Graph result r is output slot
NAME_RESULT_OUTPUT[r], or input NAME_RESULT_INPUT[r] returned unchanged (-1
in the other list).

GEMMs above the native-loop size call BLAS through a pointer the caller
sets once (any sgemm/dgemm with the Fortran convention, every argument by
pointer, e.g. the BLAS's own `sgemm_`): the library links no BLAS. Its
slots start null, so NAME_USES_SGEMM / NAME_USES_DGEMM say which must be set
before the first call. A symbolic program (one for every batch size, #18) takes the
batch size as a last parameter, `void name_entry(void **args, int64_t batch)`, and its
size macros are functions of it (NAME_ARENA_BYTES(batch), NAME_INPUT0_SHAPE(batch), ...);
NAME_MAX_BATCH bounds it (0: unbounded). Kernels ffcompile splits across its thread pool
(threadpool.py) run whole on the caller's thread in a library. The code is compiled for the exporting host's CPU
(its vector features): run it on the same kind of machine.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from llvmlite import ir

from ...ir.symbolic import Affine, Envelope, Sym
from ...passes.memory import ALIGNMENT, MemoryPlan
from ...passes.schedule import Schedule
from . import gemm_library, target
from .blas import BLAS_FUNCTIONS, blas_slot
from .runtime_gemm import GEMM_ERROR_SYMBOL
from .threadpool import POOL_SLOT
from .elementwise import I8, I64
from .lower import ENTRY, lower

C_TYPES = {"f32": "float", "f64": "double", "i32": "int32_t", "i64": "int64_t", "bool": "uint8_t"}


class ExportError(Exception):
    """The program cannot be exported as asked (bad name, no C compiler, link failure)."""


@dataclass(frozen=True)
class ExportedLibrary:
    object_path: Path
    library_path: Path
    header_path: Path
    blas: tuple[str, ...]  # the BLAS functions whose setter must be called first


def export(schedule: Schedule, plan: MemoryPlan, out_dir: str | os.PathLike, name: str,
           input_names: list[str] | None = None) -> ExportedLibrary:
    """Write name.o, libname.so and name.h for `schedule` (no argument donation) into out_dir."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ExportError(f"export: the library name {name!r} must be a C identifier")
    if plan.schedule is not schedule:
        raise ExportError("export: the memory plan was made for another schedule")
    program = lower(schedule, plan)
    gemm_library.define_in(program.module)  # the packed GEMMs it calls: the library's own copies
    if program.collectives:
        raise ExportError("export: the program has all_reduce collectives, which call back into this Python "
                          "process's communicator: a standalone library cannot run them")
    _add_c_interface(program.module, name, 1 + len(schedule.graph.inputs) + len(program.outputs)
                     if program.batch else None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    object_path, library_path, header_path = out / f"{name}.o", out / f"lib{name}.so", out / f"{name}.h"
    object_path.write_bytes(target.object_code(program.module))
    header_path.write_text(_header(schedule, program, name, input_names,
                                   plan.batch.max_batch if plan.batch is not None else None))
    _link(object_path, library_path)
    return ExportedLibrary(object_path, library_path, header_path, program.blas)


def _add_c_interface(module: ir.Module, name: str, batch_slot: int | None) -> None:
    """`name_entry` calls the (now internal) entry; setters fill the (now internal) BLAS slots,
    so the library exports only its prefixed names and two libraries can be linked together.
    A symbolic program's `name_entry(args, batch)` passes the entry a copy of the caller's
    args with the batch size in one more slot, batch_slot (the caller's array is as before)."""
    pointer = I8.as_pointer()
    entry = module.get_global(ENTRY)
    entry.linkage = "internal"
    params = [pointer.as_pointer()] + ([I64] if batch_slot is not None else [])
    wrapper = ir.Function(module, ir.FunctionType(ir.VoidType(), params), f"{name}_entry")
    b = ir.IRBuilder(wrapper.append_basic_block("entry"))
    if batch_slot is None:
        b.call(entry, list(wrapper.args))
    else:
        args, batch = wrapper.args
        slots = b.alloca(ir.ArrayType(pointer, batch_slot + 1))

        def slot(k):
            return b.gep(slots, [ir.Constant(I64, 0), ir.Constant(I64, k)], inbounds=True)

        for k in range(batch_slot):
            b.store(b.load(b.gep(args, [ir.Constant(I64, k)], inbounds=True)), slot(k))
        b.store(b.inttoptr(batch, pointer), slot(batch_slot))
        b.call(entry, [slot(0)])
    b.ret_void()
    pool = module.globals.get(POOL_SLOT)
    if pool is not None:  # stays null: a library's parallel kernels run on the caller's thread
        pool.linkage = "internal"
    error = module.globals.get(GEMM_ERROR_SYMBOL)
    if error is not None:  # a GEMM that refused BLAS at the call's batch size: read and cleared here
        error.linkage = "internal"
        reader = ir.Function(module, ir.FunctionType(I64, []), f"{name}_gemm_error")
        b = ir.IRBuilder(reader.append_basic_block("entry"))
        size = b.load(error)
        b.store(ir.Constant(I64, 0), error)
        b.ret(size)
    for function in BLAS_FUNCTIONS.values():
        slot = blas_slot(module, function)
        slot.linkage = "internal"
        setter = ir.Function(module, ir.FunctionType(ir.VoidType(), [pointer]), f"{name}_set_{function}")
        b = ir.IRBuilder(setter.append_basic_block("entry"))
        b.store(setter.args[0], slot)
        b.ret_void()


def _link(object_path: Path, library_path: Path) -> None:
    cc = os.environ.get("CC") or shutil.which("cc")
    if not cc:
        raise ExportError(f"export: no C compiler (set $CC or install cc) to link {library_path.name}; "
                          f"{object_path} and its header are written")
    result = subprocess.run([cc, "-shared", "-o", str(library_path), str(object_path)],
                            check=False, capture_output=True, text=True)
    if result.returncode:
        raise ExportError(f"export: {cc} failed to link {library_path.name}:\n{result.stderr}")


def _c_size(value) -> str:
    """A byte or element count as C: an int, or an expression of the macro parameter `batch`
    (a Sym, an Affine, an Envelope: the most of its Affines)."""
    if isinstance(value, Envelope):
        terms = [_c_size(part) for part in value.parts] or ["0"]
        expression = terms[0]
        for term in terms[1:]:
            expression = f"(({expression}) > ({term}) ? ({expression}) : ({term}))"
        return expression
    if isinstance(value, Sym):
        value = Affine.of(value)
    if isinstance(value, Affine):
        if not value.per_batch:
            return str(value.const)
        scaled = f"{value.per_batch} * (int64_t)(batch)"
        return f"({value.const} + {scaled})" if value.const else f"({scaled})"
    return str(value)


def _header(schedule: Schedule, program, name: str, input_names: list[str] | None,
            max_batch: int | None = None) -> str:
    graph = schedule.graph
    nodes = graph.nodes
    names = input_names or [nodes[i].attr("name") for i in graph.inputs]
    slot_of = {v: k for k, v in enumerate(program.outputs)}
    input_index = {v: k for k, v in enumerate(graph.inputs)}
    outputs: list = [None] * len(program.outputs)  # per slot: (type, the results it holds)
    result_output, result_input = [], []
    for r, j in enumerate(graph.outputs):
        root = schedule.root(j)
        if root in slot_of:
            k = slot_of[root]
            outputs[k] = (outputs[k] or (nodes[j].type, []))
            outputs[k][1].append(r)
            result_output.append(k)
            result_input.append(-1)
        elif root in input_index:
            result_output.append(-1)
            result_input.append(input_index[root])
        else:
            raise ExportError(f"export: result {r} of {graph.name} is neither computed nor an input")
    P = name.upper()
    guard = f"FFCOMPILE_{P}_H"
    at = "(batch)" if program.batch else ""  # a symbolic program's sizes are macros of the batch size
    lines = [f"/* {name}: exported by ffcompile from graph {graph.name}. */",
             f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", ""]
    if program.batch:
        lines += [f"/* one program for every batch size 1..{P}_MAX_BATCH (0: unbounded): the size macros",
                  f"   take it, and {name}_entry takes it last */",
                  f"#define {P}_MAX_BATCH {max_batch or 0}"]
    lines += [f"#define {P}_ARENA_BYTES{at} {_c_size(program.arena_bytes)}",
             f"#define {P}_ALIGNMENT {ALIGNMENT} /* of the arena (arrays: their element size) */",
             f"#define {P}_NUM_INPUTS {len(graph.inputs)}",
             f"#define {P}_NUM_OUTPUTS {len(outputs)}",
             f"#define {P}_NUM_RESULTS {len(graph.outputs)}"]
    for function in BLAS_FUNCTIONS.values():
        lines.append(f"#define {P}_USES_{function.upper()} {int(function in program.blas)}")
    slots = [("INPUT", k, t, f"input {names[k]}") for k, t in enumerate(graph.input_types)]
    slots += [("OUTPUT", k, t, "result " + ", ".join(map(str, results)))
              for k, (t, results) in enumerate(outputs)]
    for kind, k, t, what in slots:
        lines += ["", f"/* {kind.lower()} {k}: {what}: {t} */",
                  f"#define {P}_{kind}{k}_TYPE {C_TYPES[t.dtype]}",
                  f"#define {P}_{kind}{k}_NDIM {len(t.shape)}",
                  f"#define {P}_{kind}{k}_SHAPE{at} {{{', '.join(map(_c_size, t.shape)) or '1'}}}",
                  f"#define {P}_{kind}{k}_COUNT{at} {_c_size(t.size)}",
                  f"#define {P}_{kind}{k}_BYTES{at} {_c_size(t.nbytes)}"]
    lines.append("")
    for kind in ("INPUT", "OUTPUT"):
        sizes = ", ".join(_c_size(t.nbytes) for other, _, t, _ in slots if other == kind)
        lines.append(f"#define {P}_{kind}_BYTES{at} {{{sizes or '0'}}}")
    lines += [f"#define {P}_RESULT_OUTPUT {{{', '.join(map(str, result_output)) or '0'}}}",
              f"#define {P}_RESULT_INPUT {{{', '.join(map(str, result_input)) or '0'}}}",
              "", "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
              f"/* args = [arena, input 0 .. {P}_NUM_INPUTS-1, output 0 .. {P}_NUM_OUTPUTS-1],",
              "   each C-contiguous and aligned to its element size; one call at a time per arena. */",
              f"void {name}_entry(void **args{', int64_t batch' if program.batch else ''});",
              "/* sgemm_/dgemm_ with the Fortran convention (every argument by pointer). */"]
    lines += [f"void {name}_set_{function}(void *fn);" for function in BLAS_FUNCTIONS.values()]
    if GEMM_ERROR_SYMBOL in program.module.globals:
        lines += ["/* after a call: 0, or the matrix dimension past the BLAS's 32-bit integers that a GEMM met",
                  "   at that batch size (the call then stopped short of it: its results are not valid); cleared */",
                  f"int64_t {name}_gemm_error(void);"]
    lines += ["", "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", ""]
    return "\n".join(lines)
