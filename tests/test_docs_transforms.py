"""docs/transforms.md's vmap section: its code blocks run, in order, in one namespace, on
both backends; the page's claims are asserts in them."""
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parent.parent / "docs" / "transforms.md"


@pytest.mark.usefixtures("backend")
def test_vmap_section_code_runs():
    section = re.search(r"^## vmap.*?(?=^## |\Z)", PAGE.read_text(), re.S | re.M).group(0)
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)
