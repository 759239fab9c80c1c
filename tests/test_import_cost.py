"""`import ffcompile` stays cheap (issue 19: <= 0.15 s): the heavy libraries a backend or a
reference rule needs load on first use, not at import. Counted, never timed: a fresh
interpreter imports ffcompile and reports which modules it loaded."""
import json
import subprocess
import sys

import pytest

# Each costs tens of milliseconds or more to import (python -X importtime, 2026-12-04):
# scipy.special ~100 ms (it pulls numpy.testing and numpy.f2py), llvmlite.binding ~20 ms.
HEAVY = ("scipy", "scipy.special", "llvmlite", "llvmlite.binding", "numpy.testing", "numpy.f2py",
         "torch", "jax", "onnx", "onnxruntime")


def _modules_after(code: str) -> set[str]:
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_import_loads_no_heavy_library():
    loaded = _modules_after("import ffcompile")
    assert not loaded & set(HEAVY), f"import ffcompile loaded {sorted(loaded & set(HEAVY))}"


@pytest.mark.parametrize("backend, needs", [("llvm", "llvmlite.binding"), ("numpy", "scipy.special")])
def test_a_backend_loads_what_it_needs_on_first_use(backend, needs):
    """The lazy registry: the first compile with a backend imports it, and it works."""
    loaded = _modules_after(
        "import numpy as np, ffcompile as ff\n"
        f"f = ff.compile(lambda x: ff.erf(x) * 2.0, backend={backend!r})\n"
        "assert np.allclose(f(np.zeros(3, np.float32)), 0.0)")
    assert needs in loaded
