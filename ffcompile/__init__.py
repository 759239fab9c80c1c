"""ffcompile: a compiler for deep feedforward networks. Public API only."""
from . import distributed, nn, optim, random, tree
from .api import compile
from .checkpoint import load, save
from .functions import *  # noqa: F401,F403 - the op library is the ff. namespace
from .functions import __all__ as _functions
from .gradcheck import check_grads
from .ir import DTypeError, Graph, IRParseError, ShapeError, TensorType, VerifyError, parse_ir, verify
from .ir.lang import Value
from .runtime import ArgumentError
from .train import TrainStep, compile_train_step
from .transforms import grad, hessian, jacfwd, jacobian, jacrev, jvp, value_and_grad, vjp
from .vmap import vmap

__version__ = "0.1.0"


def __getattr__(name):
    # ff.onnx and ff.from_torch need the onnx extra, the thread pool llvmlite: imported on
    # first use so that `import ffcompile` does not (tests/test_import_cost.py).
    import importlib

    if name in ("get_num_threads", "set_num_threads"):
        return getattr(importlib.import_module(".codegen.llvm.threadpool", __name__), name)
    if name == "onnx":
        return importlib.import_module(".onnx", __name__)
    if name == "from_torch":
        return importlib.import_module(".torch_import", __name__).from_torch
    raise AttributeError(f"module 'ffcompile' has no attribute {name!r}")


def spec(shape, dtype="float32") -> TensorType:
    """The declared type of an argument, for ff.compile(fn, spec=(...))."""
    from .ir.types import dtype_name

    if any(d is None for d in shape):
        raise TypeError(f"ff.spec{tuple(shape)}: a size of None is not a type; for one program over "
                        f"every batch size compile with batch_dim= (docs/symbolic_batch.md)")
    return TensorType(tuple(int(d) for d in shape), dtype_name(dtype))


__all__ = ["ArgumentError", "DTypeError", "Graph", "IRParseError", "ShapeError", "TensorType", "TrainStep",
           "Value", "VerifyError", "check_grads", "compile", "compile_train_step", "get_num_threads", "grad", "hessian",
           "jacfwd", "jacobian", "jacrev", "jvp", "load", "nn", "optim", "parse_ir", "random", "save", "set_num_threads",
           "spec", "tree", "value_and_grad", "verify", "vjp", "vmap", *_functions]
