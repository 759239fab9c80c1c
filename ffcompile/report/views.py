"""The graph the report draws: a node table and three laid-out views of it.

`nodes` draws every node; `kernels` collapses each fused kernel (and a view
into the kernel making its storage) into one box; `modules` collapses nodes
by role and module path (or file:line outside modules). Collapsed views keep
a few-thousand-node graph readable; all three share one node table, so
hover, click and the text links work the same in each.
"""
from __future__ import annotations

import re
from collections import Counter

from ..ir import Graph
from ..ir.printer import format_attrs
from ..passes.schedule import Schedule
from .layout import layered_layout
from .roles import ROLES, node_role

BAND = {"input": 0, "forward": 0, "adjoint": 1, "recompute": 1, "update": 2,  # drawn side by side
        "tangent": 0}  # a tangent is computed beside its primal
BACKWARD = {"adjoint", "update"}  # drawn flowing back up the layers


def graph_data(graph: Graph, schedule: Schedule | None, plan=None) -> dict:
    """JSON-ready: the node table, the views, and the remat plan's stored / recomputed ids."""
    roles = [node_role(n) for n in graph.nodes]
    kernel_of = _kernel_of(graph, schedule)
    table = [[n.op.name, str(n.type), format_attrs(n).strip(), "" if n.loc is None else str(n.loc),
              ROLES.index(roles[i]), kernel_of[i], user_line(n)]
             for i, n in enumerate(graph.nodes)]
    views = {"nodes": _node_view(graph, roles, kernel_of)}
    if schedule is not None:
        views["kernels"] = _grouped_view(graph, roles, _kernel_keys(graph, schedule, kernel_of))
    views["modules"] = _grouped_view(graph, roles, _module_keys(graph, roles))
    stored, copies, originals = _plan_ids(plan)
    kernels = [] if schedule is None else [[k.kind, list(k.body)] for k in schedule.kernels]
    return {"nodes": table, "views": views, "kernels": kernels,
            "stored": stored, "copies": copies, "recomputed": originals}


def user_line(node) -> str:
    """The user's file:line of a node, or ''."""
    return "" if node.loc is None else f"{node.loc.file}:{node.loc.line}"


def _kernel_of(graph: Graph, schedule: Schedule | None) -> list[int]:
    """Kernel index of each node; a view takes its root's kernel; -1 for inputs and literals."""
    kernel_of = [-1] * len(graph.nodes)
    if schedule is None:
        return kernel_of
    for k, kernel in enumerate(schedule.kernels):
        for i in kernel.body:
            kernel_of[i] = k
    for v in schedule.views:
        kernel_of[v] = kernel_of[schedule.root(v)]
    return kernel_of


def _node_view(graph: Graph, roles: list[str], kernel_of: list[int]) -> dict:
    preds = [sorted(set(n.inputs)) for n in graph.nodes]
    cells = layered_layout([BAND[r] for r in roles], [r in BACKWARD for r in roles], preds)
    items = [[c, r, ROLES.index(roles[i]), f"%{i} {graph.nodes[i].op.name}", [i]]
             for i, (c, r) in enumerate(cells)]
    edges = [[j, i] for i, ps in enumerate(preds) for j in ps]
    boxes = []  # [first layer, first slot, last layer, last slot, label] around a kernel's nodes
    members: dict[int, list[int]] = {}
    for i, k in enumerate(kernel_of):
        if k >= 0:
            members.setdefault(k, []).append(i)
    occupied = {cell: i for i, cell in enumerate(cells)}
    for k, ids in members.items():
        layers, slots = [cells[i][0] for i in ids], [cells[i][1] for i in ids]
        box = (min(layers), min(slots), max(layers), max(slots))
        if len(ids) < 2 or (box[2] - box[0] + 1) * (box[3] - box[1] + 1) > 4 * len(ids):
            continue  # scattered: a box would cover mostly other nodes
        inside = {occupied.get((layer, slot)) for layer in range(box[0], box[2] + 1)
                  for slot in range(box[1], box[3] + 1)}
        if inside - {None} <= set(ids):  # a box around other nodes would mislead
            boxes.append([*box, f"k{k}"])
    return {"items": items, "edges": edges, "boxes": boxes}


def _kernel_keys(graph: Graph, schedule: Schedule, kernel_of: list[int]) -> list[tuple[str, str]]:
    keys = []
    for i, node in enumerate(graph.nodes):
        k = kernel_of[i]
        keys.append((f"k{k}", f"k{k} {schedule.kernels[k].kind}") if k >= 0 else (f"n{i}", f"%{i} {node.op.name}"))
    return keys


def _module_keys(graph: Graph, roles: list[str]) -> list[tuple[str, str]]:
    keys = []
    for i, node in enumerate(graph.nodes):
        if roles[i] == "input":
            keys.append((f"n{i}", f"%{i} input"))
            continue
        loc = node.loc
        where = "" if loc is None else (loc.scope or f"{re.sub(r'.*/', '', loc.file)}:{loc.line}")
        keys.append((f"{roles[i]} {where}", where or roles[i]))
    return keys


def _grouped_view(graph: Graph, roles: list[str], keys: list[tuple[str, str]]) -> dict:
    """One item per distinct key, in order of first member; edges between items."""
    index: dict[str, int] = {}
    labels, members = [], []
    for i, (key, label) in enumerate(keys):
        if key not in index:
            index[key] = len(labels)
            labels.append(label)
            members.append([])
        members[index[key]].append(i)
    item_of = [index[key] for key, _ in keys]
    preds: list[set[int]] = [set() for _ in labels]
    for i, node in enumerate(graph.nodes):
        for j in node.inputs:
            if item_of[j] != item_of[i]:
                preds[item_of[i]].add(item_of[j])
    role = [Counter(roles[i] for i in ids).most_common(1)[0][0] for ids in members]
    cells = layered_layout([BAND[r] for r in role], [r in BACKWARD for r in role], [sorted(p) for p in preds])
    items = [[c, r, ROLES.index(role[g]), labels[g], members[g]] for g, (c, r) in enumerate(cells)]
    edges = [[j, g] for g, ps in enumerate(preds) for j in sorted(ps)]
    return {"items": items, "edges": edges, "boxes": []}


def _plan_ids(plan) -> tuple[list[int], list[int], list[int]]:
    """(stored, recompute copies, recomputed originals) node ids of a RematPlan's text fields."""
    if plan is None:
        return [], [], []
    stored = [int(re.match(r"%(\d+)", s).group(1)) for s in plan.stored]
    pairs = [re.match(r"%(\d+) -> %(\d+)", s).groups() for s in plan.recomputed]
    return stored, [int(c) for _, c in pairs], [int(o) for o, _ in pairs]
