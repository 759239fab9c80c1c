"""Train a network whose store_all activations exceed a memory cap: with memory_budget= it fits.

32 residual tanh blocks (width 64: the pixels) classify scikit-learn's bundled 8x8 digits (no
download), batches of 4,096 drawn with replacement, Adam, float32, one thread. Each training
run happens in a child process under an address-space cap (RLIMIT_AS):

1. prepare (no cap): compile both training steps once, which fills ffcompile's disk cache of
   machine code (LLVM may abort, not raise, when it runs out of memory while compiling), and
   report each plan's arena;
2. one capped child per plan: import, load the data, run a one-block warm-up step of the same
   batch (loads LLVM, sets up the BLAS buffers), build the real step once and drop it (its
   arena is freed; the heap Python grew to trace, plan and generate code stays), read the
   process's address space (VmSize) as the baseline, set RLIMIT_AS = baseline + cap, then
   compile the step again (trace, plan, load the machine code from the disk cache, allocate the
   arena) and train.

So the cap covers what one more build and the training need beyond that baseline: the arena,
the code, parameters, optimizer state, batches, and whatever tracing and planning do not find
in the heap they left. store_all's arena alone exceeds the cap: it fails with ffcompile's
ArenaMemoryError (a MemoryError naming the bytes), never a crash; the plan at memory_budget=
(remat="chain") trains.

    python examples/memory_cap.py [--depth 32] [--batch 4096] [--cap-mb 48] [--budget-mb 8]
                                  [--steps 40] [--backend llvm|numpy]
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

PLANS = ("store_all", "budget")


def load(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return train_test_split(x, digits.target.astype(np.int32), test_size=0.2, random_state=seed,
                            stratify=digits.target)


def init(depth: int, seed: int = 0) -> dict:
    """Blocks of width 64: the digits' pixels, so the step is a chain of alike blocks from its input."""
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
    return {"blocks": [(normal(64, 64), np.zeros(64, np.float32)) for _ in range(depth)],
            "w_out": normal(64, 10)}


def forward(params, x, tanh):
    """Residual blocks h + tanh(h W + b) / sqrt(depth); tanh is ff.tanh when traced, np.tanh to
    evaluate (so evaluation allocates no second arena under the cap)."""
    scale = float(len(params["blocks"])) ** -0.5  # a Python float: weakly typed, stays float32
    h = x
    for w, b in params["blocks"]:
        h = h + tanh(h @ w + b) * scale
    return h @ params["w_out"]


def indices(rng, n: int, batch: int) -> np.ndarray:
    """A batch of distinct examples, or drawn with replacement when it is larger than the data."""
    return rng.permutation(n)[:batch] if batch <= n else rng.integers(0, n, batch)


def make_step(plan: str, budget_bytes: int, backend: str, lr: float):
    import ffcompile as ff

    def loss(params, x, labels):
        return ff.nn.cross_entropy(forward(params, x, ff.tanh), labels)
    # "chain": the DP alone (the step is a chain of residual blocks); "optimal" would also run
    # the MILP, whose solver (HiGHS) takes more memory than this example caps.
    options = {"remat": "store_all"} if plan == "store_all" else {"remat": "chain", "memory_budget": budget_bytes}
    return ff.compile_train_step(loss, ff.optim.Adam(lr), backend=backend, **options)


def address_space() -> int:
    """The process's virtual memory size (what RLIMIT_AS limits), in bytes."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))


def prepare(args) -> dict:
    """Compile both steps (no cap; fills the disk cache): each plan's arena in bytes."""
    x_train, _, y_train, _ = load()
    args.batch = args.batch or len(x_train)
    first = indices(np.random.default_rng(0), len(x_train), args.batch)
    arenas = {}
    for plan in PLANS:
        step = make_step(plan, args.budget_mb << 20, args.backend, args.lr)
        params = init(args.depth)
        lowered = step.lower(params, step.init(params), x_train[first], y_train[first])
        lowered.compile()
        arenas[plan] = lowered.plan.peak_bytes
    return arenas


def train_capped(args) -> dict:
    """Warm up and build the step once, cap the address space at baseline + cap, then train one plan."""
    import ffcompile as ff
    ff.set_num_threads(1)  # and OPENBLAS_NUM_THREADS=1 (child): the cap meters data, not thread stacks
    x_train, x_test, y_train, y_test = load()
    args.batch = args.batch or len(x_train)
    rng = np.random.default_rng(0)
    first = indices(np.random.default_rng(0), len(x_train), args.batch)
    warm = make_step("store_all", 0, args.backend, args.lr)
    small = init(1)
    warm(small, warm.init(small), x_train[first], y_train[first])
    forward(small, x_test, np.tanh)  # NumPy's BLAS sets up its buffers on its first product
    params = init(args.depth)
    # Build the step once, uncapped, and drop it (its arena is freed with it): the heap Python
    # grew to trace, plan and generate code stays in the baseline and is reused under the cap.
    once = make_step(args.plan, args.budget_mb << 20, args.backend, args.lr)
    once.lower(params, once.init(params), x_train[first], y_train[first]).compile()
    del once
    gc.collect()
    step = make_step(args.plan, args.budget_mb << 20, args.backend, args.lr)
    opt_state = step.init(params)
    baseline = address_space()
    cap = baseline + (args.cap_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    result = {"plan": args.plan, "baseline_bytes": baseline, "cap_bytes": cap}
    losses = []
    start = time.perf_counter()
    try:
        for _ in range(args.steps):
            idx = indices(rng, len(x_train), args.batch)
            losses.append(float(step(params, opt_state, x_train[idx], y_train[idx])))
    except MemoryError as error:
        result.update(outcome="MemoryError", error=f"{type(error).__name__}: {error}")
        return result
    accuracy = float(np.mean(forward(params, x_test, np.tanh).argmax(axis=1) == y_test))
    window = max(1, args.steps // 10)
    result.update(outcome="trained", first_loss=float(np.mean(losses[:window])),
                  last_loss=float(np.mean(losses[-window:])), test_accuracy=accuracy,
                  steps=len(losses), seconds=time.perf_counter() - start,
                  final_address_space=address_space())
    return result


def child(args, mode: str, plan: str | None = None) -> dict:
    """Run this script as a child process in mode; its last stdout line is the JSON result."""
    command = [sys.executable, os.path.abspath(__file__), "--mode", mode, *(["--plan", plan] if plan else []),
               *(f"--{name.replace('_', '-')}={getattr(args, name)}"
                 for name in ("depth", "batch", "cap_mb", "budget_mb", "steps", "lr", "backend"))]
    # The children import the ffcompile this process would import (a worktree, not an install).
    root = os.path.dirname(os.path.dirname(importlib.util.find_spec("ffcompile").origin))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=env)
    if done.returncode != 0:  # a crash (a signal) or an uncaught error: report it as it is
        return {"plan": plan, "outcome": f"exit code {done.returncode}", "error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    arenas = child(args, "prepare")
    if "error" in arenas:
        raise RuntimeError(f"compiling the steps without a cap failed:\n{arenas['error']}")
    results = {plan: child(args, "train", plan) for plan in PLANS}
    return {"arenas": arenas, **results}


def report(args, outcome: dict) -> None:
    arenas, capped = outcome["arenas"], outcome["budget"]
    print(f"{args.depth} residual tanh blocks of width 64, batch {args.batch or '1437 (all training images)'}, "
          f"float32, Adam, {args.backend} backend, one thread")
    print(f"cap: RLIMIT_AS = baseline + {args.cap_mb} MiB ({args.cap_mb << 20:,} bytes; baseline: the "
          f"process after a warm-up step and one build of the step, {capped.get('baseline_bytes', 0):,} bytes)")
    print(f"arena: store_all {arenas['store_all']:,} bytes, memory_budget={args.budget_mb} MiB "
          f"{arenas['budget']:,} bytes")
    for plan in PLANS:
        r = outcome[plan]
        if r["outcome"] == "trained":
            print(f"{plan}: trained {r['steps']} steps in {r['seconds']:.1f} s: loss "
                  f"{r['first_loss']:.4f} -> {r['last_loss']:.4f}, test accuracy {r['test_accuracy']:.2%}, "
                  f"address space at the end: baseline + {(r['final_address_space'] - r['baseline_bytes']) / 2**20:.1f} MiB")
        else:
            print(f"{plan}: {r['outcome']}: {r['error']}")


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096,
                        help="drawn with replacement when larger than the 1,437 training images; 0: all of them")
    parser.add_argument("--cap-mb", type=int, default=48, help="address space allowed beyond the baseline")
    parser.add_argument("--budget-mb", type=int, default=8, help="memory_budget= of the plan that fits")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per child process")
    parser.add_argument("--mode", choices=("run", "prepare", "train"), default="run")
    parser.add_argument("--plan", choices=PLANS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if args.mode == "prepare":
        print(json.dumps(prepare(args)))
    elif args.mode == "train":
        print(json.dumps(train_capped(args)))
    else:
        outcome = run(args)
        report(args, outcome)
        return outcome


if __name__ == "__main__":
    main()
