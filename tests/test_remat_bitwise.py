"""Recomputation is bitwise: every strategy gives store_all's bits on both backends, and
any stored set does on the NumPy backend (docs/remat.md: on LLVM no floating-point
contraction spans two ops, but a reduction's vector lanes are LLVM's choice per kernel,
so an arbitrary stored set can still move a result by an ulp there)."""
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from remat_models import ISSUE_MODELS, training_graph

from ffcompile.codegen.registry import get_backend
from ffcompile.pipeline import arena_of, program_of
from ffcompile.passes.recompute import forward_mask, insert_recomputation
from ffcompile.passes.remat import STRATEGIES, RematInfeasible, remat
from ffcompile.tree import tree_flatten

DTYPES = (np.float32, np.float64)
NAMES = ("res2", "branch", "gelu_ce")
CASES = {}


def case(name, dtype):
    """(graph, flat arguments, store_all's results per backend)."""
    if (name, dtype) not in CASES:
        loss, args = ISSUE_MODELS[name](dtype)
        graph = training_graph(loss, args)
        leaves = tree_flatten(tuple(args))[0]
        CASES[name, dtype] = graph, leaves, {}
    graph, leaves, expected = CASES[name, dtype]
    return graph, leaves, expected


def same_bits(graph, backend, name, dtype, result, label):
    reference, leaves, expected = case(name, dtype)
    if backend not in expected:
        expected[backend] = [np.asarray(r) for r in program_of(reference, get_backend(backend)).call(list(leaves))]
    got = [np.asarray(r) for r in program_of(result, get_backend(backend)).call(list(leaves))]
    differ = [k for k, (g, e) in enumerate(zip(got, expected[backend])) if g.tobytes() != e.tobytes()]
    assert not differ, f"{name} {np.dtype(dtype).name} {label} on {backend}: results {differ} differ"


def smallest_feasible(graph, peak_of):
    with pytest.raises(RematInfeasible) as info:
        remat(graph, "optimal", 1, peak_of=peak_of)
    return int(re.search(r"smallest real peak found is (\d+) bytes", str(info.value)).group(1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_every_strategy_gives_store_alls_bits(backend, name, dtype):
    graph, _, _ = case(name, dtype)
    peak_of = arena_of(get_backend(backend))
    for strategy in STRATEGIES[1:-1]:
        result, _ = remat(graph, strategy, peak_of=peak_of)
        same_bits(graph, backend, name, dtype, result, strategy)
    least = smallest_feasible(graph, peak_of)
    for budget in (least, remat(graph, "sqrt", peak_of=peak_of)[1].peak_bytes):
        result, _ = remat(graph, "optimal", budget, time_limit=5.0, peak_of=peak_of)
        same_bits(graph, backend, name, dtype, result, f"optimal@{budget}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_any_stored_set_gives_store_alls_bits_on_numpy(name, dtype, data):
    graph, _, _ = case(name, dtype)
    forward = forward_mask(graph)
    stored = data.draw(st.sets(st.sampled_from([i for i, f in enumerate(forward) if f])))
    result = insert_recomputation(graph, stored, forward).graph
    same_bits(graph, "numpy", name, dtype, result, f"stored={sorted(stored)}")
