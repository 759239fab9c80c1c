"""docs/symbolic_batch.md's code blocks run, in order, in one namespace, on both backends:
its claims (bitwise equal to the per-size program, one trace, max_batch) are asserts in them."""
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parent.parent / "docs" / "symbolic_batch.md"


@pytest.mark.usefixtures("backend")
def test_symbolic_batch_page_code_runs():
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)
