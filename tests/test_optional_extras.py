"""The core package needs none of its optional extras."""
import subprocess
import sys


def test_core_imports_without_the_onnx_extra():
    """With onnx unimportable, ffcompile still imports and compiles; ff.onnx says what to install."""
    code = ("import sys; sys.modules['onnx'] = None\n"
            "import numpy as np, ffcompile as ff\n"
            "assert ff.compile(lambda x: x * 2.0)(np.ones(2, np.float32)).tolist() == [2.0, 2.0]\n"
            "try:\n    ff.onnx\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ff.onnx needs the onnx extra: pip install 'ffcompile[onnx]'" in out.stdout


def test_core_imports_without_the_distributed_extra():
    """With mpi4py unimportable, ffcompile imports and trains; data_parallel says what to install."""
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "import numpy as np, ffcompile as ff\n"
            "step = ff.compile_train_step(lambda p, x: (p * x).sum(), ff.optim.SGD(0.1))\n"
            "p = np.ones(2); step(p, step.init(p), np.ones(2))\n"
            "try:\n    ff.compile_train_step(lambda p, x: (p * x).sum(), ff.optim.SGD(0.1), data_parallel=True)\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'ffcompile[distributed]'" in out.stdout
