"""ONNX's official backend test cases (shipped in the onnx wheel) on both ffcompile backends.

Every case whose model uses only ops, element types and opsets the importer supports
runs; the ones it does not pass are listed with their reason in
ffcompile.onnx.conformance.EXCLUDED and run as strict xfails (one that starts passing fails).
"""
import pytest

pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'ffcompile[onnx]')")

from ffcompile.onnx.conformance import EXCLUDED, applicable_cases, run_case  # noqa: E402

CASES = applicable_cases()


def _params():
    for kind, case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=EXCLUDED[case.name])] if case.name in EXCLUDED else []
        yield pytest.param(case, id=f"{kind}/{case.name}", marks=marks)


@pytest.mark.parametrize("case", list(_params()))
def test_onnx_backend_case(case, backend):
    run_case(case, backend)


def test_exclusions_are_applicable_cases():
    """The exclusion list names only cases that run here (no stale or inapplicable names)."""
    names = {case.name for _, case in CASES}
    assert set(EXCLUDED) <= names
    assert len(CASES) - len(EXCLUDED) >= 600  # 600 of 622 at the time of writing
