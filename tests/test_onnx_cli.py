"""`ffcompile dump|export|bench model.onnx`: an ONNX file is a command-line model; its exported
library runs from C like a zoo model's; onnxruntime is an inference contender of the harness."""
import csv

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'ffcompile[onnx]')")

import onnx  # noqa: E402

import ffcompile as ff  # noqa: E402
from ffcompile import zoo  # noqa: E402
from ffcompile.cli import main  # noqa: E402
from ffcompile.onnx.target import OnnxFile  # noqa: E402
from ffcompile.tree import tree_flatten  # noqa: E402
from test_llvm_export import build_driver, needs_cc, run_in_c  # noqa: E402

BENCH_FAST = ["--steps", "3", "--rounds", "1", "--warmup", "1", "--settle", "0"]


@pytest.fixture
def onnx_file(tmp_path):
    """The digits MLP written by ff.onnx.export, its batch axis made symbolic."""
    w = zoo.get("digits")
    params, x, _ = w.example_inputs(batch_size=2)
    proto = ff.onnx.export(w.model, params, x)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    path = tmp_path / "digits.onnx"
    onnx.save(proto, path)
    return str(path)


def test_dump_onnx_file_prints_parseable_ir(capsys, onnx_file):
    assert main(["dump", onnx_file, "--batch", "5"]) == 0
    text = capsys.readouterr().out
    assert str(ff.parse_ir(text)) == text and "f32[5,64]" in text


@needs_cc
def test_exported_onnx_model_runs_from_c(tmp_path, capsys, onnx_file):
    out = tmp_path / "out"
    assert main(["export", onnx_file, "-o", str(out), "--batch", "3"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["digits.h", "digits.o", "libdigits.so"]
    target = OnnxFile(onnx_file)
    params, x, _ = target.example_inputs(3)

    class Library:  # what build_driver reads of an export
        header_path, library_path = out / "digits.h", out / "libdigits.so"
    run_in_c(build_driver(Library, "digits", tmp_path), tmp_path, tree_flatten(params)[0] + [x], 1, [])
    expected = ff.compile(target.model)(params, x)
    got = np.fromfile(tmp_path / "out0.bin", np.float32).reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_bench_onnx_file_against_onnxruntime(capsys, tmp_path, onnx_file):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    table = tmp_path / "bench.csv"
    assert main(["bench", onnx_file, "--mode", "infer", *BENCH_FAST, "--batch", "4",
                 "--contenders", "ffcompile-llvm,onnxruntime", "--csv", str(table)]) == 0
    rows = {r["contender"]: r for r in csv.DictReader(table.open())}
    assert rows["onnxruntime"]["status"] == "ok" and rows["ffcompile-llvm"]["status"] == "ok"
    assert float(rows["onnxruntime"]["deviation_from_reference"]) < 1e-5  # the same outputs as ffcompile's


def test_bench_zoo_model_with_onnxruntime_skips_training(capsys, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    table = tmp_path / "bench.csv"
    assert main(["bench", "two_tower", *BENCH_FAST, "--batch", "4",
                 "--contenders", "ffcompile-llvm,onnxruntime", "--csv", str(table)]) == 0
    rows = {(r["mode"], r["contender"]): r for r in csv.DictReader(table.open())}
    assert rows["infer", "onnxruntime"]["status"] == "ok"
    assert float(rows["infer", "onnxruntime"]["deviation_from_reference"]) < 1e-5
    assert rows["train", "onnxruntime"]["status"] == "unsupported: onnxruntime runs infer only"


def test_onnx_file_has_no_loss_for_training(capsys, onnx_file):
    with pytest.raises(SystemExit) as exc:
        main(["bench", onnx_file, "--contenders", "ffcompile-llvm"])
    assert exc.value.code == 2
    assert "needs a loss(params, x, y) function" in capsys.readouterr().err
