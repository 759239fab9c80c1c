"""docs/transforms.md's code blocks run (before its vmap section, tested below), in order, in one namespace, on both backends (the
page's claims are asserts in them), and the dump it shows is what its block prints."""
import contextlib
import io
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parent.parent / "docs" / "transforms.md"


@pytest.mark.usefixtures("backend")
def test_transforms_page_code_runs_and_its_dump_is_real():
    text = PAGE.read_text().split("\n## vmap")[0]
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 3
    namespace: dict = {}
    printed = io.StringIO()
    for block in blocks:
        with contextlib.redirect_stdout(printed):
            exec(compile(block, "docs/transforms.md", "exec"), namespace)
    shown = re.search(r"```\n(graph @lambda \{.*?\})\n```", text, re.S).group(1)
    assert printed.getvalue().strip() == shown


@pytest.mark.usefixtures("backend")
def test_vmap_section_code_runs():
    section = re.search(r"^## vmap.*?(?=^## |\Z)", PAGE.read_text(), re.S | re.M).group(0)
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)
