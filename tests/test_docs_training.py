"""docs/training.md's code blocks run, in order, in one namespace, on both backends: the
page's claims (lr 0 freezes, schedules, eager updates, save/load) are asserts in them."""
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parent.parent / "docs" / "training.md"


@pytest.mark.usefixtures("backend")
def test_training_page_code_runs():
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
    assert len(blocks) == 5
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)
