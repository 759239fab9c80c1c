"""`ff.save(path, tree)` / `ff.load(path)`: pytrees of arrays in the safetensors format.

The format (https://github.com/huggingface/safetensors), written and read here
with NumPy alone: 8 bytes, the little-endian length N of a JSON header; N bytes
of header (padded with spaces to a multiple of 8), mapping each tensor's name to
{"dtype", "shape", "data_offsets": [begin, end]} (offsets into the data that
follows), plus "__metadata__", a str -> str map; then the raw little-endian data.

Tensor names are the leaves' dotted paths (`layers.0.w`, as `module.state_dict`
names them), so the safetensors library and torch (`safetensors.torch.load_file`)
read the file as a flat dict. The metadata key "ffcompile.tree" stores the
structure (dicts, lists, tuples, None; NamedTuples and dataclasses as dicts of
their fields) as JSON, which `load` rebuilds; `load(path, like=tree)` gives
tree's own structure back (NamedTuples, dataclasses), checked against the file.
A file without that key (written by other tools) loads as the flat dict.
Arrays load as fresh, writeable, C-contiguous copies: ready to train.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from .tree import TreeDef, tree_flatten, tree_from_paths, tree_paths

__all__ = ["load", "save"]

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16,
           "U8": np.uint8, "BOOL": np.bool_}
_NAMES = {np.dtype(t): name for name, t in _DTYPES.items()}
_TREE_KEY = "ffcompile.tree"
_MAX_HEADER = 100_000_000  # the safetensors library's own limit


def save(path: str | os.PathLike, tree: Any) -> None:
    """Write tree's arrays (NumPy arrays or scalars) to path as safetensors."""
    leaves, treedef = tree_flatten(tree)
    names = tree_paths(tree)
    if len(set(names)) != len(names):
        clash = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"ff.save: leaves share the names {clash} (a key containing '.' "
                         f"repeats a nested path); rename them")
    header, chunks, offset = {}, [], 0
    for name, leaf in zip(names, leaves):
        array = np.asarray(leaf)
        native = array.dtype.newbyteorder("=")
        if native not in _NAMES:
            raise TypeError(f"ff.save: {name} has dtype {array.dtype}, which safetensors cannot hold "
                            f"(supported: {', '.join(str(d) for d in _NAMES)})")
        data = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _NAMES[native], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    header["__metadata__"] = {_TREE_KEY: json.dumps(_structure(treedef, iter(names)))}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for chunk in chunks:
            f.write(chunk)


def _structure(treedef: TreeDef, names) -> Any:
    """The tree as JSON: a leaf is its tensor's name, a node a one-key object."""
    kind = treedef.kind
    if kind == "leaf":
        return next(names)
    if kind == "none":
        return None
    children = [_structure(c, names) for c in treedef.children]
    if kind in ("dict", "namedtuple", "dataclass"):
        keys = treedef.keys
        if not all(isinstance(k, str) for k in keys):
            raise TypeError(f"ff.save: dict keys must be strings to be saved, got {keys!r}")
        return {"dict": dict(zip(keys, children))}
    return {kind: children}


def load(path: str | os.PathLike, like: Any = None) -> Any:
    """The tree saved at path (a flat name -> array dict for files without ffcompile's
    structure); with like, that tree's structure, its leaves' shapes checked."""
    arrays, metadata = _read(path)
    if like is not None:
        return tree_from_paths(like, arrays, f"ff.load: {os.fspath(path)}")
    if _TREE_KEY not in metadata:
        return arrays
    try:
        return _rebuild(json.loads(metadata[_TREE_KEY]), arrays)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"ff.load: {path}: the stored tree structure does not match its tensors ({e})") from e


def _rebuild(node, arrays):
    if node is None:
        return None
    if isinstance(node, str):
        return arrays[node]
    (kind, children), = node.items()
    if kind == "dict":
        return {k: _rebuild(c, arrays) for k, c in children.items()}
    if kind not in ("list", "tuple"):
        raise ValueError(f"unknown node kind {kind!r}")
    items = [_rebuild(c, arrays) for c in children]
    return items if kind == "list" else tuple(items)


def _read(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"ff.load: {path} is not a safetensors file (shorter than its 8-byte header length)")
    n = int.from_bytes(blob[:8], "little")
    if n > min(len(blob) - 8, _MAX_HEADER):
        raise ValueError(f"ff.load: {path}: header length {n} exceeds the file ({len(blob)} bytes)")
    try:
        header = json.loads(blob[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"ff.load: {path}: the header is not JSON ({e})") from e
    if not isinstance(header, dict):
        raise ValueError(f"ff.load: {path}: the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data = memoryview(blob)[8 + n:]
    arrays = {}
    for name, entry in header.items():
        arrays[name] = _tensor(path, name, entry, data)
    return arrays, metadata


def _tensor(path, name: str, entry, data: memoryview) -> np.ndarray:
    try:
        dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
        shape = tuple(int(d) for d in entry["shape"])
        begin, end = (int(o) for o in entry["data_offsets"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"ff.load: {path}: tensor {name!r} has a malformed entry {entry!r}") from e
    if any(d < 0 for d in shape) or not 0 <= begin <= end <= len(data) \
            or end - begin != math.prod(shape) * dtype.itemsize:
        raise ValueError(f"ff.load: {path}: tensor {name!r}: offsets [{begin}, {end}] do not hold "
                         f"{entry['dtype']}{list(shape)} within the {len(data)} data bytes")
    array = np.frombuffer(data[begin:end], dtype).reshape(shape)
    return array.astype(array.dtype.newbyteorder("="), copy=True)  # native order, writeable, aligned
