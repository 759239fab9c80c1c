"""ONNX's official backend test cases, as far as ffcompile's op set reaches.

`applicable_cases()` lists every test case that ships inside the onnx wheel
(node, simple, pytorch-converted, pytorch-operator) whose model uses only
supported op types and element types, at opset 11 or newer or upgradable to it
by ONNX's version converter (most pytorch-* cases are opset 6); `run_case` runs one on an
ffcompile backend and compares with ONNX's own `assert_similar_outputs`.
"""
from __future__ import annotations

import glob
import os

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.loader import load_model_tests
from onnx.backend.test.runner import Runner

from .backend import backend_for
from .dtypes import TO_NUMPY
from .errors import OnnxError
from .importer import DEFAULT_DOMAINS, upgraded
from .table import RULES

KINDS = ("node", "simple", "pytorch-converted", "pytorch-operator")

_INTEGER_MATH = "integer arithmetic beyond add/sub/mul/compare (ffcompile's div and pow are float-only)"
_TRAINING = "training-mode semantics (random masks, batch statistics); imported for inference only"
_OLD_PRELU = ("opset 6 per-channel PRelu slope [C]: ONNX's version converter keeps it, and "
              "opset 7+ broadcasting does not accept it against [N, C, ...]")
_RUN_TIME_LENGTH = ("the window length is a graph input that reaches Range through arithmetic: a "
                    "shape computed at run time (ffcompile compiles static shapes)")
# Every applicable case ffcompile does not pass, with why; the tests mark them strict
# xfail, so one that starts passing must be removed from here.
EXCLUDED = {
    "test_batchnorm_epsilon_training_mode": _TRAINING,
    "test_batchnorm_example_training_mode": _TRAINING,
    "test_training_dropout": _TRAINING,
    "test_training_dropout_default": _TRAINING,
    "test_training_dropout_default_mask": _TRAINING,
    "test_training_dropout_mask": _TRAINING,
    "test_training_dropout_zero_ratio": _TRAINING,
    "test_training_dropout_zero_ratio_mask": _TRAINING,
    "test_div_int32_trunc": _INTEGER_MATH,
    "test_pow_types_int32_float32": _INTEGER_MATH,
    "test_pow_types_int32_int32": _INTEGER_MATH,
    "test_pow_types_int64_float32": _INTEGER_MATH,
    "test_pow_types_int64_int64": _INTEGER_MATH,
    "test_PReLU_1d_multiparam": _OLD_PRELU,
    "test_PReLU_2d_multiparam": _OLD_PRELU,
    "test_PReLU_3d_multiparam": _OLD_PRELU,
    **{f"test_{window}window{kind}_expanded": _RUN_TIME_LENGTH
       for window in ("blackman", "hamming", "hann") for kind in ("", "_symmetric")},
}


def case_model(case) -> onnx.ModelProto:
    return case.model if case.model is not None else onnx.load(os.path.join(case.model_dir, "model.onnx"))


def _tensor_types(model) -> list[int]:
    values = list(model.graph.input) + list(model.graph.output)
    if any(v.type.WhichOneof("value") != "tensor_type" for v in values):  # sequences, maps
        return [-1]
    return [v.type.tensor_type.elem_type for v in values]


def is_applicable(model) -> bool:
    """Every node an op ffcompile imports, every tensor of a supported type, and an
    opset ffcompile reads (directly, or after ONNX's version converter)."""
    try:
        model = upgraded(model)
    except OnnxError:
        return False
    return (all(n.domain in DEFAULT_DOMAINS and n.op_type in RULES for n in model.graph.node)
            and all(t in TO_NUMPY for t in _tensor_types(model)))


def applicable_cases() -> list:
    """(kind, case) for every applicable case, sorted by name."""
    found = []
    for kind in KINDS:
        for case in load_model_tests(kind=kind):
            if is_applicable(case_model(case)):
                found.append((kind, case))
    return sorted(found, key=lambda kc: kc[1].name)


def _data_sets(case, model):
    if case.data_sets is not None:
        return case.data_sets
    sets = []
    for folder in sorted(glob.glob(os.path.join(case.model_dir, "test_data_set*"))):
        def read(prefix):
            files = sorted(glob.glob(os.path.join(folder, f"{prefix}_*.pb")),
                           key=lambda f: int(f.rsplit("_", 1)[1].split(".")[0]))
            return [numpy_helper.to_array(onnx.load_tensor(f)) for f in files]
        sets.append((read("input"), read("output")))
    return sets


def _array(x) -> np.ndarray:
    return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else np.asarray(x)


def run_case(case, backend: str) -> None:
    model = case_model(case)
    rep = backend_for(backend).prepare(model)
    for inputs, expected in _data_sets(case, model):
        outputs = rep.run([_array(x) for x in inputs])
        Runner.assert_similar_outputs([_array(e) for e in expected], list(outputs),
                                      rtol=case.rtol, atol=case.atol)
