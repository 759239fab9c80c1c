"""Small llvmlite IR-building helpers (in the spirit of Numba's cgutils)."""
from __future__ import annotations

from contextlib import contextmanager

from llvmlite import ir


@contextmanager
def for_range(builder: ir.IRBuilder, count: ir.Value, name: str = "i"):
    """Emit `for i in range(count)`: the with-body is the loop body, `i` is yielded.

    The index is a phi (no stack slot), and its increment is `nsw`, so the loop
    vectorizer sees a canonical counted loop. The builder ends after the loop.
    """
    ty = count.type
    entry = builder.block
    header = builder.append_basic_block(f"{name}.header")
    body = builder.append_basic_block(f"{name}.body")
    end = builder.append_basic_block(f"{name}.end")
    builder.branch(header)

    builder.position_at_end(header)
    index = builder.phi(ty, name=name)
    index.add_incoming(ir.Constant(ty, 0), entry)
    builder.cbranch(builder.icmp_signed("<", index, count), body, end)

    builder.position_at_end(body)
    yield index
    following = builder.add(index, ir.Constant(ty, 1), name=f"{name}.next", flags=["nsw"])
    index.add_incoming(following, builder.block)
    builder.branch(header)

    builder.position_at_end(end)
