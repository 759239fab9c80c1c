"""ff.tree: flatten/unflatten round trips over every node kind (hypothesis), leaf paths,
and the fast structure matcher agreeing with tree_flatten."""
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import ffcompile as ff
from ffcompile.tree import tree_leaves_like


class Pair(NamedTuple):
    first: object
    second: object


@dataclass(frozen=True)
class Box:
    content: object
    label: object = None


leaves = st.integers(-5, 5).map(lambda i: np.full((2,), i, np.float64))
trees = st.recursive(
    leaves | st.none(),
    lambda children: (st.lists(children, max_size=3) | st.lists(children, max_size=3).map(tuple)
                      | st.dictionaries(st.sampled_from("abcd"), children, max_size=3)
                      | st.builds(Pair, children, children) | st.builds(Box, children, children)),
    max_leaves=12)


@given(trees)
def test_flatten_unflatten_round_trip(tree):
    leaves_, treedef = ff.tree.tree_flatten(tree)
    rebuilt = ff.tree.tree_unflatten(treedef, leaves_)
    assert ff.tree.tree_flatten(rebuilt)[1] == treedef
    assert all(a is b for a, b in zip(ff.tree.tree_leaves(rebuilt), leaves_))
    assert len(ff.tree.tree_paths(tree)) == len(leaves_) == treedef.num_leaves
    assert tree_leaves_like(rebuilt, treedef) == leaves_ or not leaves_
    doubled = ff.tree.tree_map(lambda x: 2 * x, tree)
    assert all(np.array_equal(d, 2 * x) for d, x in zip(ff.tree.tree_leaves(doubled), leaves_))


def test_paths_name_fields_and_indices():
    tree = {"net": [Pair(np.zeros(1), Box(np.ones(1)))], "t": np.zeros(())}
    assert ff.tree.tree_paths(tree) == ["net.0.first", "net.0.second.content", "t"]
    _, treedef = ff.tree.tree_flatten(tree)
    assert tree_leaves_like({"net": [(np.zeros(1), Box(np.ones(1)))], "t": np.zeros(())}, treedef) is None
    assert tree_leaves_like({"net": [Pair(np.zeros(1), Box(np.ones(1), label=np.ones(1)))],
                             "t": np.zeros(())}, treedef) is None


def test_a_tensor_type_is_a_leaf_not_a_dataclass_node():
    spec = ff.spec((2, 3))
    leaves_, treedef = ff.tree.tree_flatten({"x": spec})
    assert leaves_ == [spec] and treedef.children[0].kind == "leaf"
