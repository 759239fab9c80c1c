"""ff.save / ff.load (safetensors written and read by our own code, checked against the
safetensors library and torch), module.state_dict / load_state_dict, and NamedTuple and
dataclass parameters."""
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pytest

import ffcompile as ff


class Layer(NamedTuple):
    w: np.ndarray
    b: np.ndarray


@dataclass
class Model:
    hidden: Layer
    out: Layer
    steps_seen: int = field(default=0, init=False)  # not a field of the tree


def layer(rng, n_in, n_out, dtype=np.float64):
    return Layer(rng.normal(size=(n_in, n_out)).astype(dtype), np.zeros(n_out, dtype))


def mixed_tree():
    rng = np.random.default_rng(0)
    return {"params": {"layers": [{"w": rng.normal(size=(3, 4)).astype(np.float32), "b": np.zeros(4, np.float32)},
                                  {}, {"w": rng.normal(size=(4, 2))}]},
            "opt": {"count": np.array(7, np.int64), "flags": np.array([True, False])},
            "pair": (np.arange(3, dtype=np.int32), None), "scalar": np.float64(2.5)}


def assert_trees_equal(a, b):
    leaves_a, tree_a = ff.tree.tree_flatten(a)
    leaves_b, tree_b = ff.tree.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(x, y)


def test_save_load_round_trip_keeps_structure_dtypes_and_values(tmp_path):
    tree = mixed_tree()
    ff.save(tmp_path / "t.safetensors", tree)
    loaded = ff.load(tmp_path / "t.safetensors")
    expected = {**tree, "scalar": np.array(2.5)}  # a NumPy scalar comes back as a 0-d array
    assert_trees_equal(loaded, expected)
    for leaf in ff.tree.tree_leaves(loaded):
        assert leaf.flags.c_contiguous and leaf.flags.writeable and leaf.flags.aligned


def test_namedtuples_and_dataclasses_load_as_dicts_or_into_their_own_types(tmp_path):
    rng = np.random.default_rng(1)
    model = Model(layer(rng, 3, 5), layer(rng, 5, 2))
    ff.save(tmp_path / "m.safetensors", model)
    plain = ff.load(tmp_path / "m.safetensors")
    assert set(plain) == {"hidden", "out"} and set(plain["hidden"]) == {"w", "b"}
    typed = ff.load(tmp_path / "m.safetensors", like=model)
    assert type(typed) is Model and type(typed.hidden) is Layer
    assert_trees_equal(typed, model)
    with pytest.raises(ValueError, match=r"missing keys \['extra'\].*shape mismatch for hidden.w: \(3, 5\)"):
        ff.load(tmp_path / "m.safetensors", like={"hidden": {"w": np.zeros((5, 3)), "b": np.zeros(5)},
                                                   "out": {"w": np.zeros((5, 2)), "b": np.zeros(2)},
                                                   "extra": np.zeros(1)})


def test_the_safetensors_library_and_torch_read_our_files(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors is the format oracle")
    tree = mixed_tree()
    ff.save(tmp_path / "t.safetensors", tree)
    flat = safetensors_numpy.load_file(str(tmp_path / "t.safetensors"))
    names = ff.tree.tree_paths(tree)
    assert sorted(flat) == sorted(names)
    for name, leaf in zip(names, ff.tree.tree_leaves(tree)):
        assert flat[name].dtype == np.asarray(leaf).dtype
        np.testing.assert_array_equal(flat[name], leaf)
    safetensors_torch = pytest.importorskip("safetensors.torch", reason="torch reads safetensors through it")
    tensors = safetensors_torch.load_file(str(tmp_path / "t.safetensors"))
    np.testing.assert_array_equal(tensors["params.layers.0.w"].numpy(), tree["params"]["layers"][0]["w"])


def test_files_written_by_the_safetensors_library_load_as_flat_dicts(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors is the format oracle")
    model = ff.nn.Sequential(ff.nn.Linear(3, 4), ff.nn.LayerNorm(4), ff.nn.Linear(4, 2))
    params = model.init(0)
    safetensors_numpy.save_file(model.state_dict(params), str(tmp_path / "lib.safetensors"))
    flat = ff.load(tmp_path / "lib.safetensors")
    assert sorted(flat) == sorted(model.state_dict(params))
    assert_trees_equal(model.load_state_dict(flat), params)


def test_a_big_endian_array_is_stored_little_endian(tmp_path):
    array = np.arange(4, dtype=">f8")
    ff.save(tmp_path / "be.safetensors", {"a": array})
    blob = (tmp_path / "be.safetensors").read_bytes()
    assert blob.endswith(np.arange(4, dtype="<f8").tobytes())
    np.testing.assert_array_equal(ff.load(tmp_path / "be.safetensors")["a"], array)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:5], "not a safetensors file"),
    (lambda b: (10 ** 9).to_bytes(8, "little") + b[8:], "header length 1000000000 exceeds the file"),
    (lambda b: b[:8] + b"x" + b[9:], "header is not JSON"),
    (lambda b: b[:-8], "do not hold F64\\[2\\]"),
])
def test_damaged_files_are_clear_errors(tmp_path, damage, message):
    ff.save(tmp_path / "ok.safetensors", {"a": np.ones(2)})
    (tmp_path / "bad.safetensors").write_bytes(damage((tmp_path / "ok.safetensors").read_bytes()))
    with pytest.raises(ValueError, match=message):
        ff.load(tmp_path / "bad.safetensors")


def test_unsaveable_trees_are_refused():
    with pytest.raises(TypeError, match="dtype complex128"):
        ff.save("/nonexistent/never-written", {"z": np.ones(2, complex)})
    with pytest.raises(ValueError, match=r"share the names \['a.b'\]"):
        ff.save("/nonexistent/never-written", {"a.b": np.ones(1), "a": {"b": np.ones(1)}})
    with pytest.raises(TypeError, match="dict keys must be strings"):
        ff.save("/nonexistent/never-written", {1: np.ones(1)})


def test_state_dict_has_dotted_keys_and_loads_back():
    model = ff.nn.Sequential(ff.nn.Linear(3, 4), ff.nn.ReLU(), ff.nn.Linear(4, 2), ff.nn.LayerNorm(2))
    params = model.init(0)
    state = model.state_dict(params)
    assert list(state) == ["layers.0.b", "layers.0.w", "layers.2.b", "layers.2.w", "layers.3.bias", "layers.3.weight"]
    loaded = model.load_state_dict(state)
    assert_trees_equal(loaded, params)
    assert loaded["layers"][0]["w"] is not params["layers"][0]["w"]


def test_load_state_dict_names_every_bad_key():
    model = ff.nn.Sequential(ff.nn.Linear(3, 4), ff.nn.Linear(4, 2))
    state = model.state_dict(model.init(0))
    bad = {k: v for k, v in state.items() if k != "layers.0.b"}
    bad["layers.1.w"] = np.zeros((2, 4), np.float32)
    bad["layers.5.w"] = np.zeros(1, np.float32)
    with pytest.raises(ValueError, match=r"Sequential.load_state_dict: the state dict does not fit: "
                                         r"missing keys \['layers.0.b'\]; unexpected keys \['layers.5.w'\]; "
                                         r"shape mismatch for layers.1.w: \(2, 4\) in .*, \(4, 2\) expected"):
        model.load_state_dict(bad)
    with pytest.raises(ValueError, match="layers.0.w has dtype int64, parameters are floats"):
        model.load_state_dict({**state, "layers.0.w": np.zeros((3, 4), np.int64)})
    with pytest.raises(ValueError, match=r"state_dict: params does not fit: missing keys \['layers.1.b'\]"):
        model.state_dict({"layers": [{"w": np.zeros((3, 4)), "b": np.zeros(4)}, {"w": np.zeros((4, 2))}]})


@pytest.mark.usefixtures("backend")
def test_namedtuple_and_dataclass_parameters_train(tmp_path):
    rng = np.random.default_rng(2)
    model = Model(layer(rng, 3, 8), layer(rng, 8, 1))
    x, y = rng.normal(size=(16, 3)), rng.normal(size=(16, 1))

    def loss(m, x, y):
        h = ff.tanh(x @ m.hidden.w + m.hidden.b)
        return ff.nn.mse(h @ m.out.w + m.out.b, y)

    step = ff.compile_train_step(loss, ff.optim.Adam(0.05))
    state = step.init(model)
    assert type(state["m"]) is Model and type(state["m"].hidden) is Layer
    graph = step.lower(model, state, x, y).graph
    names = [graph.nodes[i].attr("name") for i in graph.inputs]
    assert names[:4] == ["params.hidden.w", "params.hidden.b", "params.out.w", "params.out.b"]
    first = float(step(model, state, x, y))
    for _ in range(40):
        last = float(step(model, state, x, y))
    assert last < 0.5 * first
    ff.save(tmp_path / "model.safetensors", model)
    np.testing.assert_array_equal(ff.load(tmp_path / "model.safetensors", like=model).out.w, model.out.w)
