"""ONNX element types <-> ffcompile dtypes."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

# Only the element types ffcompile has (TensorType's DTYPES).
TO_NUMPY = {
    TensorProto.FLOAT: np.dtype(np.float32),
    TensorProto.DOUBLE: np.dtype(np.float64),
    TensorProto.INT32: np.dtype(np.int32),
    TensorProto.INT64: np.dtype(np.int64),
    TensorProto.BOOL: np.dtype(np.bool_),
}
FROM_NUMPY = {v: k for k, v in TO_NUMPY.items()}
SUPPORTED = "float32, float64, int32, int64, bool"


def type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type).lower()
