"""examples/memory_cap.py: under the same address-space cap, store_all fails with ffcompile's
ArenaMemoryError (no crash) and the memory_budget= plan trains; what docs/remat.md shows is
what the example prints (its arena, store_all and loss lines)."""
import pathlib
import re

import pytest

from tests.test_examples import load_example

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "remat.md"
LOSS = re.compile(r"budget: trained (\d+) steps .*: loss ([\d.]+) -> ([\d.]+), test accuracy ([\d.]+)%")


def documented(backend: str) -> list[str]:
    block = re.search(rf"<!-- memory_cap {backend} -->\n```\n(.*?)\n```\n<!-- end -->", DOC.read_text(), re.S)
    return block.group(1).splitlines()


def test_memory_budget_trains_where_store_all_cannot_allocate(backend, capsys):
    pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn")
    outcome = load_example("memory_cap").main(["--backend", backend, "--timeout", "600"])
    printed = capsys.readouterr().out
    print(printed)
    cap = 48 << 20  # the example's default --cap-mb, as the docs state it
    arenas, failed, trained = outcome["arenas"], outcome["store_all"], outcome["budget"]
    assert arenas["store_all"] > cap > 8 << 20 >= arenas["budget"]
    # store_all: a Python MemoryError from ffcompile naming the arena's bytes, not a signal
    assert failed["outcome"] == "MemoryError", failed
    assert failed["cap_bytes"] - failed["baseline_bytes"] == cap
    assert failed["error"].startswith(f"ArenaMemoryError: {backend} backend: cannot allocate the arena of @train_step")
    assert f"it needs {arenas['store_all']:,} bytes" in failed["error"]
    # the planned step converges under the same cap
    assert trained["outcome"] == "trained", trained
    assert trained["cap_bytes"] - trained["baseline_bytes"] == cap
    assert trained["last_loss"] < 0.1 * trained["first_loss"]
    assert trained["test_accuracy"] >= 0.9
    # the docs show this output
    lines = printed.splitlines()
    doc = documented(backend)
    for line in doc:
        if line.startswith(("arena:", "store_all:")) or "residual tanh blocks" in line:
            assert line in lines
    (steps, first, last, accuracy), = [LOSS.search(line).groups() for line in doc if LOSS.search(line)]
    got = [LOSS.search(line).groups() for line in lines if LOSS.search(line)][0]
    assert got[0] == steps
    assert abs(float(got[1]) - float(first)) < 2e-3 and abs(float(got[2]) - float(last)) < 2e-3
    assert abs(float(got[3]) - float(accuracy)) < 1.0  # percent
