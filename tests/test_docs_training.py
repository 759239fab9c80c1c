"""docs/training.md's code blocks run, in order, in one namespace, on both backends: the
page's claims (lr 0 freezes, schedules, eager updates, save/load) are asserts in them."""
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def run_page_code(page: Path, blocks: int) -> None:
    """Run the page's ```python blocks (there must be `blocks` of them) in one namespace."""
    found = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert len(found) == blocks
    namespace: dict = {}
    for block in found:
        exec(compile(block, str(page), "exec"), namespace)


@pytest.mark.usefixtures("backend")
def test_training_page_code_runs():
    run_page_code(DOCS / "training.md", 5)
