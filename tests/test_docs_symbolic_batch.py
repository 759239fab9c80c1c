"""docs/symbolic_batch.md's code blocks run, in order, in one namespace, on both backends:
its claims (bitwise equal to the per-size program, one trace, max_batch) are asserts in them."""
import pytest
from test_docs_training import DOCS, run_page_code


@pytest.mark.usefixtures("backend")
def test_symbolic_batch_page_code_runs():
    run_page_code(DOCS / "symbolic_batch.md", 2)
