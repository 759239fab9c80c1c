"""Where a cold compile goes: per stage, per phase of code generation, per function.

    python -m benchmarks.compile_profile [--models mnist,wide] [--top 5]

Each model's SGD training step is compiled once in this process with the disk cache off:
its first call's CPU time, then the `cf.stats()` table (wall time per stage; under `lower`,
its phases: building the IR, parsing it, LLVM's O3 pipeline, machine code, loading), then
the functions of its LLVM module that cost the most, each parsed, optimized and emitted alone
in CPU time (the others declared): an estimate of its share, since alone it is optimized
without its callers. Times grow on a loaded machine; the load average is printed.
"""
from __future__ import annotations

import argparse
import os
import re
import time


def _functions(ir_text: str) -> tuple[list[str], dict[str, list[str]]]:
    """The module's lines outside function definitions, and each definition's lines by name."""
    header, functions, current = [], {}, None
    for line in ir_text.split("\n"):
        if line.startswith("define "):
            current = functions[re.search(r'@"?([\w.]+)"?\(', line).group(1)] = [line]
        elif current is not None:
            current.append(line)
            if line == "}":
                current = None
        else:
            header.append(line)
    return header, functions


def _declaration(definition: list[str]) -> str:
    line = definition[0].replace("define ", "declare ", 1).replace(" internal ", " ").rstrip(" {")
    line = re.sub(r"\s+#\d+\s*$", "", line)
    return re.sub(r"%\"?[\w.]+\"?(?=[,)])", "", line)  # parameter names


def function_costs(ir_text: str) -> list[tuple[str, int, float, float]]:
    """(name, IR lines, O3 s, machine code s) per defined function, compiled alone, costliest first."""
    from ffcompile.codegen.llvm import target

    tm = target.host_target_machine()
    header, functions = _functions(ir_text)
    rows = []
    for name, definition in functions.items():
        others = [_declaration(d) for other, d in functions.items() if other != name]
        module = target.parse("\n".join(header + others + ["\n".join(definition).replace(" internal ", " ", 1)]), tm)
        start = time.process_time()
        target.optimize(module, tm)
        optimized = time.process_time()
        tm.emit_object(module)
        rows.append((name, len(definition), optimized - start, time.process_time() - optimized))
    return sorted(rows, key=lambda row: -(row[2] + row[3]))


def profile(model: str, top: int) -> None:
    import ffcompile as ff
    from ffcompile import zoo

    workload = zoo.get(model)
    params, x, y = workload.example_inputs()
    step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.01))
    state = step.init(params)
    start = time.process_time()
    step(params, state, x, y)
    first = time.process_time() - start
    lowered = step._compiled.last_lowered  # the call's signature (its IR is built again below)
    print(f"\n### {model}: first call {first * 1e3:.0f} ms of CPU\n\n```\n{lowered.stats()}```")
    rows = function_costs(lowered.program.llvm_ir)
    total = sum(o + c for _, _, o, c in rows)
    print(f"\n{len(rows)} functions, alone: O3 + machine code {total * 1e3:.0f} ms of CPU; the costliest:\n")
    print("| function | IR lines | O3 ms | machine code ms |\n|---|---|---|---|")
    for name, lines, optimized, emitted in rows[:top]:
        print(f"| {name} | {lines} | {optimized * 1e3:.1f} | {emitted * 1e3:.1f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="xor,digits,mnist,deep,wide,two_tower")
    parser.add_argument("--top", type=int, default=5, help="functions listed per model")
    args = parser.parse_args(argv)
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} cpus)")
    saved = os.environ.get("FFCOMPILE_CACHE_DIR")
    os.environ["FFCOMPILE_CACHE_DIR"] = ""  # every compile cold
    try:
        for model in args.models.split(","):
            profile(model, args.top)
    finally:
        if saved is None:
            del os.environ["FFCOMPILE_CACHE_DIR"]
        else:
            os.environ["FFCOMPILE_CACHE_DIR"] = saved
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
