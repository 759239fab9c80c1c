"""The `ffcompile` command, run in-process: dump formats, --train, model files, bench, errors."""
import csv
import textwrap

import pytest

import ffcompile as ff
from ffcompile import zoo
from ffcompile.cli import load_model_file, main
from ffcompile.tree import tree_flatten

MODEL_FILE = textwrap.dedent('''
    import numpy as np
    import ffcompile as ff


    class Towers(ff.nn.Module):
        def __init__(self):
            self.a = ff.nn.Dense(3, 4, ff.nn.Tanh())
            self.b = ff.nn.Dense(2, 4, ff.nn.ReLU())
            self.head = ff.nn.Linear(4, 5)

        def forward(self, params, a, b):
            return self.head(params["head"], self.a(params["a"], a) * self.b(params["b"], b))


    model = Towers()


    def loss(params, x, y):
        return ff.nn.cross_entropy(model(params, *x), y)


    def example_inputs(batch_size=6):
        rng = np.random.default_rng(0)
        x = (rng.standard_normal((batch_size, 3)).astype(np.float32),
             rng.standard_normal((batch_size, 2)).astype(np.float32))
        return model.init(0), x, rng.integers(0, 5, batch_size).astype(np.int32)
''')


def dump(capsys, *argv):
    assert main(["dump", *argv]) == 0
    return capsys.readouterr().out


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "towers.py"
    path.write_text(MODEL_FILE)
    return str(path)


def test_dump_text_round_trips_and_names_module_paths(capsys):
    text = dump(capsys, "xor")
    assert str(ff.parse_ir(text)) == text
    graph = ff.parse_ir(text)
    assert [str(t) for t in graph.output_types] == ["f32[4,1]"]
    assert "@layers.0.act)" in text and "= tanh" in text and "= sigmoid" in text


def test_dump_train_is_value_and_grad(capsys):
    text = dump(capsys, "digits", "--train", "--batch", "8")
    graph = ff.parse_ir(text)
    assert str(graph) == text
    n_params = len(tree_flatten(zoo.get("digits").model.param_types())[0])
    # the loss, the gradients, then the flag of cross_entropy's label range check (lang.check)
    assert len(graph.outputs) == 1 + n_params + 1 and str(graph.output_types[-1]) == "i32[]"
    assert str(graph.output_types[0]) == "f32[]" and " adjoint loc(" in text
    assert 'f32[8,64] = input {name="x"}' in text and 'i32[8] = input {name="y"}' in text


def test_dump_dot(capsys):
    out = dump(capsys, "two_tower", "--format", "dot")
    assert out.startswith('digraph "forward" {') and out.rstrip().endswith("}")
    assert "concat" in out and "->" in out


def test_dump_python_is_the_generated_numpy_code(capsys):
    source = dump(capsys, "xor", "--format", "python", "--train")
    assert "def program(" in source and "np.matmul" in source
    compile(source, "<generated>", "exec")  # valid Python


def test_dump_wide_is_fast_on_placeholders(capsys):
    text = dump(capsys, "wide", "--batch", "2")
    assert "f32[4096,4096] = input" in text and "f32[2,1024] = input" in text


def test_model_file(capsys, model_file):
    text = dump(capsys, model_file)
    assert str(ff.parse_ir(text)) == text
    assert "@a.act)" in text and "@b.act)" in text and "@head)" in text
    assert "towers.py" in text  # locations point into the model file
    train = dump(capsys, model_file, "--train", "--batch", "3")
    graph = ff.parse_ir(train)
    assert len(graph.outputs) == 1 + 6 + 1 and "softmax_cross_entropy" in train  # + the label check's flag
    assert "f32[3,3] = input" in train
    assert "def program(" in dump(capsys, model_file, "--format", "python")


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == zoo.names()


@pytest.mark.parametrize("argv, message", [
    (["dump", "resnet"], "unknown model 'resnet'"),
    (["dump", "missing.py"], "model file 'missing.py' does not exist"),
    (["dump", "xor", "--batch", "0"], "--batch must be positive"),
    (["dump", "xor", "--format", "svg"], "invalid choice: 'svg'"),
    (["bench", "resnet"], "unknown model 'resnet'"),
    (["bench", "xor", "--contenders", "ffcompile-numpy,nope"], "unknown contender nope"),
    (["bench", "xor", "--steps", "0"], "--steps, --rounds and --threads must be positive"),
    ([], "required"),
])
def test_errors_exit_with_status_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_incomplete_model_files(capsys, tmp_path):
    no_inputs = tmp_path / "no_inputs.py"
    no_inputs.write_text("model = None\n")
    with pytest.raises(SystemExit):
        main(["dump", str(no_inputs)])
    assert "must define model and example_inputs" in capsys.readouterr().err
    no_loss = tmp_path / "no_loss.py"
    no_loss.write_text(MODEL_FILE.replace("def loss(", "def not_loss("))
    assert main(["dump", str(no_loss)]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["dump", str(no_loss), "--train"])
    assert "--train needs a loss(params, x, y) function" in capsys.readouterr().err


def test_dump_after_every_stage_prints_numbered_dumps_whose_graphs_parse_back(capsys):
    assert main(["dump", "xor", "--train", "--after", "all"]) == 0
    sections = capsys.readouterr().out.split("// ---- after ")[1:]
    names = [s.splitlines()[0] for s in sections]
    assert names == ["00-input.ir", "01-decompose.ir", "02-simplify.ir", "03-fuse.ir", "04-donation.ir",
                     "05-memory.ir", "06-lower.ir"]
    texts = {name: section.split("\n", 1)[1] for name, section in zip(names, sections)}
    for name in names[:3]:  # graph stages: IR text
        assert str(ff.parse_ir(texts[name])) == texts[name]
    assert texts["03-fuse.ir"].startswith("schedule @")
    assert texts["05-memory.ir"].startswith("memory @")
    assert "define void @" in texts["06-lower.ir"]  # the LLVM IR of the default backend


def test_dump_after_unknown_stage_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["dump", "xor", "--after", "nosuchpass"])
    assert "unknown stages" in capsys.readouterr().err


def test_dump_schedule_memory_and_stats_formats(capsys):
    schedule = dump(capsys, "digits", "--train", "--format", "schedule")
    assert schedule.startswith("schedule @") and "kernel 1 gemm" in schedule  # 0: the label range check
    memory = dump(capsys, "digits", "--train", "--format", "memory")
    assert memory.startswith("memory @") and "offset=" in memory
    stats = dump(capsys, "digits", "--train", "--format", "stats")
    assert "simplify" in stats and "kernels" in stats and "lower bound" in stats
    optimized = dump(capsys, "digits", "--train", "--format", "optimized")
    assert str(ff.parse_ir(optimized)) == optimized


def test_export_writes_object_library_and_header(tmp_path, capsys, monkeypatch):
    import shutil

    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) to link the shared library")
    monkeypatch.setenv("FFCOMPILE_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["export", "xor", "--train", "-o", str(tmp_path / "out")]) == 0
    assert "wrote" in capsys.readouterr().out
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["libxor.so", "xor.h", "xor.o"]
    assert "xor_entry" in (tmp_path / "out" / "xor.h").read_text()


def test_dump_llvm_ir_and_assembly(capsys):
    assert "define" in dump(capsys, "xor", "--train", "--format", "llvm")
    assert "ret" in dump(capsys, "xor", "--train", "--format", "asm")


@pytest.mark.parametrize("train, kernels", [(False, 3), (True, 20)])  # 20: the step counter is
# one (the hyperparameters are 0-d inputs the updates read as they are), SGD's 1 - lr wd one
# (the updates' beta: accumulate.py); the label range check of cross_entropy (lang.check) one
def test_profile_prints_one_row_per_kernel(capsys, train, kernels):
    assert main(["profile", "digits", "--steps", "3"] + (["--train"] if train else [])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"profile @{'train_step' if train else 'forward'}: mean of 3 runs")
    assert lines[1].split()[:5] == ["kernel", "kind", "us", "share", "GFLOP/s"]
    assert len(lines) == 2 + kernels and sum(" gemm " in line for line in lines) == (8 if train else 3)


BENCH_FAST = ["--steps", "3", "--rounds", "1", "--warmup", "1", "--settle", "0"]


def test_bench_zoo_model_prints_the_table_and_writes_the_csv(capsys, tmp_path):
    contenders = ["ffcompile-llvm", "ffcompile-numpy", "numpy-hand"]
    out = tmp_path / "xor.csv"
    assert main(["bench", "xor", *BENCH_FAST, "--contenders", ",".join(contenders), "--csv", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| model | mode | contender | median ms | min ms | round medians ms | × ref | compile s |" in table
    rows = list(csv.DictReader(out.open()))
    assert [(r["mode"], r["contender"]) for r in rows] == [
        (mode, name) for mode in ("train", "infer") for name in [*contenders, "BLAS floor"]]
    for r in rows:
        assert r["status"] == "ok", r
        assert f"| xor | {r['mode']} | {r['contender']} | {r['median_ms']} | {r['min_ms']} |" in table
        assert float(r["ratio_to_reference"]) > 0 and float(r["compile_s"]) > 0
        if r["contender"] == "ffcompile-llvm":  # the default reference
            assert r["ratio_to_reference"] == "1"


def test_bench_model_file_runs_ffcompile_and_marks_the_peers_unsupported(capsys, tmp_path, model_file):
    out = tmp_path / "towers.csv"
    assert main(["bench", model_file, *BENCH_FAST, "--batch", "4",
                 "--contenders", "ffcompile-numpy,numpy-hand", "--csv", str(out)]) == 0
    table = capsys.readouterr().out
    rows = {(r["mode"], r["contender"]): r for r in csv.DictReader(out.open())}
    for mode in ("train", "infer"):
        assert rows[mode, "ffcompile-numpy"]["status"] == "ok"
        assert rows[mode, "numpy-hand"]["status"] == "unsupported: towers.py is not a Sequential of Dense layers"
        assert rows[mode, "BLAS floor"]["status"].startswith("unsupported")
        assert f"| towers.py | {mode} | numpy-hand | unsupported" in table
    # The first step's loss is the file's loss on its own example inputs at --batch.
    module = load_model_file(model_file)
    params, x, y = module.example_inputs(batch_size=4)
    expected = float(ff.compile(module.loss, backend="numpy")(params, x, y))
    assert float(rows["train", "ffcompile-numpy"]["first_value"]) == pytest.approx(expected, rel=1e-6)


def test_bench_model_file_without_loss_needs_mode_infer(capsys, tmp_path):
    no_loss = tmp_path / "no_loss.py"
    no_loss.write_text(MODEL_FILE.replace("def loss(", "def not_loss("))
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(no_loss), "--contenders", "ffcompile-numpy"])
    assert exc.value.code == 2
    assert "benchmarking training needs a loss(params, x, y) function" in capsys.readouterr().err


def test_docs_cli_names_every_command_and_option():
    import argparse
    import pathlib

    from ffcompile.cli import build_parser

    doc = (pathlib.Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, sub in commands.choices.items():
        if f"ffcompile {name}" not in doc:
            missing.append(name)
        for action in sub._actions:
            if action.option_strings and action.dest != "help" and action.option_strings[-1] not in doc:
                missing.append(f"{name} {action.option_strings[-1]}")
    assert not missing, f"docs/cli.md does not mention: {missing}"
