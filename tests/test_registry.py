"""Every op and every ff. function has all its rules, and they agree with each other.

A new op or function without an entry in samples.py fails `test_every_op_has_cases`
or `test_every_public_function_has_cases`.
"""
from __future__ import annotations


import numpy as np
import pytest

import ffcompile as ff
from ffcompile import functions
from ffcompile.codegen.registry import BACKENDS
from ffcompile.ir import Builder, ShapeError, TensorType
from ffcompile.ir.attributes import Attr
from ffcompile.ir.jvp_rules import JVP_RULES
from ffcompile.ir.ops import COMPOSITES, OPS, PRIMITIVES, Composite, Cost, Op, Trait
from samples import (FUNCTION_CASES, OP_CASES, function_case_params, make_function_case,
                     make_op_case, one_op_graph, op_case_params, run_graph)


# --------------------------------------------------------------------------- the tests

def test_every_op_has_cases():
    assert set(OPS) == set(OP_CASES), "add sample inputs for new ops to OP_CASES"
    assert all(OP_CASES[name] for name in OPS)


def test_every_public_function_has_cases():
    missing = set(functions.__all__) - set(FUNCTION_CASES)
    assert not missing, f"public ff. functions without a test case: {sorted(missing)}"
    assert set(FUNCTION_CASES) <= set(functions.__all__)
    assert all(getattr(ff, name) is getattr(functions, name) for name in functions.__all__)


@pytest.mark.parametrize("name", list(OPS))
def test_op_declares_its_rules(name):
    op = OPS[name]
    assert op.name == name and issubclass(op, Op)
    assert op.infer.__func__ is not Op.infer.__func__, f"{name} has no shape rule"
    assert all(isinstance(t, Trait) for t in op.traits)
    if op.differentiable:
        assert op.vjp.__func__ is not Op.vjp.__func__, f"{name} is differentiable but has no VJP"
        assert op in JVP_RULES, f"{name} is differentiable but has no JVP rule in ir/jvp_rules.py"
    else:
        assert op not in JVP_RULES, f"{name} is not differentiable but has a JVP rule"
    if name in PRIMITIVES:
        for backend in BACKENDS.values():
            assert backend.lowers(op), f"the {backend.name} backend has no lowering for {name}"
    if name in COMPOSITES:
        assert op.decompose.__func__ is not Composite.decompose.__func__, f"{name} has no decompose"


@pytest.mark.parametrize("name", list(OPS))
def test_op_declares_the_kind_of_every_attribute(name):
    """Attributes exist only as `attributes = {name: kind}` on the op, and each kind is
    enforced: a value no kind accepts is rejected naming the op and the attribute."""
    op = OPS[name]
    assert isinstance(op.attributes, dict)
    assert all(isinstance(kind, Attr) for kind in op.attributes.values()), f"{name}: undeclared kind"
    attrs, operands = make_op_case(name, 0)
    assert set(attrs) == set(op.attributes), f"{name}: its sample uses undeclared attributes"
    types = [TensorType.of(a) for a in operands]
    for attribute in op.attributes:
        with pytest.raises(ShapeError, match=f"{name}: {attribute} must be "):
            op.check_signature(types, {**attrs, attribute: object()})


@pytest.mark.parametrize("name, k", op_case_params())
def test_op_rules_agree(name, k):
    """Shape rule, reference, cost and lowering (or decomposition) of one op agree."""
    op = OPS[name]
    attrs, operands = make_op_case(name, k)
    types = [TensorType.of(a) for a in operands]
    op.check_signature(types, attrs)
    out = op.infer(types, attrs)
    cost = op.cost(types, out, attrs)
    assert isinstance(cost, Cost) and cost.flops >= 0 and cost.bytes >= 0
    assert isinstance(cost.flops, int) and isinstance(cost.bytes, int)
    if name == "input":
        return  # no reference: see test_input_is_the_only_op_without_a_reference
    expected = op.reference(attrs, *operands)
    assert expected.shape == out.shape and expected.dtype == out.np_dtype
    got = run_graph(one_op_graph(op, attrs, operands), operands)
    assert got.shape == out.shape and got.dtype == out.np_dtype
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)


def test_input_is_the_only_op_without_a_reference():
    """An input's value is the caller's argument; every other op defines its meaning."""
    builder = Builder()
    x = np.arange(6.0).reshape(2, 3)
    graph = builder.finish([builder.add_input(TensorType.of(x), "x")])
    assert np.array_equal(run_graph(graph, [x]), x)
    with pytest.raises(NotImplementedError):
        OPS["input"].reference({}, x)


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("name, k", function_case_params())
def test_function_matches_numpy(name, k):
    case, args = make_function_case(name, k)
    got = ff.compile(case.fn)(*args)
    expected = case.reference(*args)
    assert got.shape == np.shape(expected) and got.dtype == np.asarray(expected).dtype
    np.testing.assert_allclose(got, expected, rtol=case.rtol, atol=1e-15)


def test_non_differentiable_cases_say_why():
    for name, cases in FUNCTION_CASES.items():
        for case in cases:
            assert case.differentiable or case.why, f"{name}: say why it is not gradient-checked"
