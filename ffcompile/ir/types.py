"""TensorType: the static type of every IR value (shape and element type)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .symbolic import Sym, is_dim

# Short IR spelling -> NumPy dtype. The order is the text form's canonical order.
DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "i32": np.dtype(np.int32),
    "i64": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
}
_BY_NUMPY = {v: k for k, v in DTYPES.items()}
FLOAT_DTYPES = ("f32", "f64")


def dtype_name(dtype) -> str:
    """The IR spelling of a NumPy dtype (or an IR spelling, returned unchanged)."""
    if isinstance(dtype, str) and dtype in DTYPES:
        return dtype
    try:
        np_dtype = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"unsupported dtype {dtype!r}") from exc
    if np_dtype not in _BY_NUMPY:
        supported = ", ".join(str(d) for d in DTYPES.values())
        raise TypeError(f"unsupported dtype {np_dtype}; ffcompile supports {supported}")
    return _BY_NUMPY[np_dtype]


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int | Sym, ...]  # a Sym is a size known at call time (symbolic.py)
    dtype: str  # one of DTYPES

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise TypeError(f"unknown dtype {self.dtype!r}")
        if not all(map(is_dim, self.shape)):
            raise TypeError(f"shape must be non-negative ints (or symbolic sizes), got {self.shape!r}")

    @staticmethod
    def of(array) -> "TensorType":
        array = np.asarray(array)
        return TensorType(tuple(int(d) for d in array.shape), dtype_name(array.dtype))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    @property
    def nbytes(self) -> int:
        return self.size * self.np_dtype.itemsize

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: str) -> "TensorType":
        return TensorType(self.shape, dtype)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


_TYPE_RE = re.compile(r"^(f32|f64|i32|i64|bool)\[([\w*,\s]*)\]$", re.ASCII)
_DIM_RE = re.compile(r"^(?:(\d+)|(?:(\d+)\*)?([A-Za-z_]\w*))$", re.ASCII)


def parse_type(text: str) -> TensorType:
    match = _TYPE_RE.match(text.strip())
    if not match:
        raise ValueError(f"malformed type {text!r}; expected e.g. f32[64,128] or f32[B,128]")
    dims = match.group(2).strip()
    shape = tuple(parse_dim(d.strip(), text) for d in dims.split(",")) if dims else ()
    return TensorType(shape, match.group(1))


def parse_dim(text: str, context: str) -> int | Sym:
    """`64`, `B` or `2*B`."""
    match = _DIM_RE.match(text)
    if not match:
        raise ValueError(f"malformed dimension {text!r} in {context!r}; expected e.g. 64, B or 2*B")
    size, coef, name = match.groups()
    return int(size) if size is not None else Sym(name, int(coef) if coef else 1)
