"""What an HTML report (ffcompile/report/) costs: its size, the time to write it, and the
time headless Chromium takes to open it, for the digits and mnist training steps and
graphs of about 1,000 and 3,000 nodes.

    python -m benchmarks.report [--screenshots docs]

Each training step is the SGD step of `ffcompile report MODEL --train` (every pass
dumped; LLVM IR and assembly included); the big graphs are value_and_grad of the tanh
MLP of examples/remat_study.py under the sqrt remat plan. Writing is timed from a
Lowered (the pipeline has run; the report builds the native code for its LLVM IR and
assembly stages, which is most of the time). Page load is from navigation to the end of
the report's script, the graph drawn (median of 3). --screenshots DIR saves
report.png (the digits step, a gradient matmul selected) and report_remat.png (a
32-layer MLP under the sqrt plan, a stored activation selected), as docs/report.md
shows them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import ffcompile as ff
from examples.remat_study import mlp_args, mlp_loss
from ffcompile import zoo
from ffcompile.report import browser


def training_step(name: str):
    workload = zoo.get(name)
    params, (x, y) = workload.init(), workload.batch()
    step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.01), dump_after="all")
    return step.lower(params, step.init(params), x, y)


def deep_mlp(layers: int):
    return ff.compile(ff.value_and_grad(mlp_loss), remat="sqrt", dump_after="all").lower(*mlp_args(layers, 16, 8))


CASES = {"digits step": lambda: training_step("digits"), "mnist step": lambda: training_step("mnist"),
         "MLP 64 layers, sqrt": lambda: deep_mlp(64), "MLP 200 layers, sqrt": lambda: deep_mlp(200)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--screenshots", default=None, metavar="DIR")
    args = parser.parse_args(argv)
    out = tempfile.mkdtemp(prefix="ffcompile-report-")
    rows = []
    for name, lower in CASES.items():
        lowered = lower()
        path = os.path.join(out, name.split()[0] + f"{len(rows)}.html")
        start = time.perf_counter()
        lowered.report(path)
        rows.append((name, len(lowered.optimized.nodes), path, time.perf_counter() - start))
    print(f"{'report':<22} {'nodes':>6} {'bytes':>10} {'write s':>8} {'load ms':>8}")
    with browser.headless_chromium() as driver:
        for name, nodes, path, seconds in rows:
            loads = [browser.open_report(driver, path) for _ in range(3)]
            errors = browser.console_errors(driver)
            print(f"{name:<22} {nodes:>6} {os.path.getsize(path):>10} {seconds:>8.2f} "
                  f"{statistics.median(loads):>8.0f}" + (f"  console errors: {errors}" if errors else ""))
        if args.screenshots:
            for name, lowered, node in (("report.png", training_step("digits"), 42),
                                        ("report_remat.png", deep_mlp(32), None)):
                path = os.path.join(out, name.replace(".png", ".html"))
                lowered.report(path)
                browser.open_report(driver, path)
                node = node if node is not None else int(lowered.plan.stored[1].split()[0][1:])
                driver.execute_script(f"selectNode({node})")
                shot = os.path.join(args.screenshots, name)
                driver.save_screenshot(shot)
                _palette(shot)
                print(f"wrote {shot}")
    return 0


def _palette(path: str) -> None:
    """256 colors, no dithering: a quarter of the bytes, the same picture (flat UI colors)."""
    from PIL import Image  # matplotlib's dependency (the examples extra)

    image = Image.open(path).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(path, optimize=True)


if __name__ == "__main__":
    sys.exit(main())
