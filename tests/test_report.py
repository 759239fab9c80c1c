"""The HTML report (ffcompile/report/): layout invariants, roles, stage links, the page's
contents and self-containedness, and `ffcompile report`. The browser test is
test_report_browser.py."""
import json
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ffcompile as ff
from ffcompile.cli import main
from ffcompile.report.layout import layered_layout
from ffcompile.report.roles import node_role
from ffcompile.report.stages import lowered_stages, stage_links
from ffcompile.report.views import graph_data
from tests.report_cases import deep_remat_plan, digits_step


def page_data(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S).group(1))


@st.composite
def banded_dags(draw):
    n = draw(st.integers(1, 40))
    bands = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    backward = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    preds = [sorted(set(draw(st.lists(st.integers(0, i - 1), max_size=3)))) if i else [] for i in range(n)]
    return bands, backward, preds


@given(banded_dags())
def test_layout_gives_each_item_its_own_cell_and_edges_follow_their_direction(dag):
    bands, backward, preds = dag
    cells = layered_layout(bands, backward, preds)
    assert len(set(cells)) == len(cells) and min(c for c, _ in cells) == 0
    from_sources = []  # sources and what reads only them sit next to their first user instead
    for ps in preds:
        from_sources.append(all(from_sources[j] for j in ps))
    for i, ps in enumerate(preds):
        for j in ps:
            if from_sources[j] or from_sources[i]:
                continue
            if not backward[i] and not backward[j]:
                assert cells[i][0] > cells[j][0], "forward items flow down the layers"
            elif backward[i] and backward[j]:
                assert cells[i][0] < cells[j][0], "backward items flow back up"


def test_a_thousand_node_chain_lays_out_without_recursion():
    n = 5000
    cells = layered_layout([0] * n, [False] * n, [[i - 1] if i else [] for i in range(n)])
    assert [c for c, _ in cells] == list(range(n))


def test_roles_tell_forward_adjoint_update_and_recompute_apart():
    step = digits_step().optimized
    roles = [node_role(n) for n in step.nodes]
    assert set(roles) == {"input", "forward", "adjoint", "update"}
    assert all(n.loc.scope == "optim" for n, r in zip(step.nodes, roles) if r == "update")
    plan = deep_remat_plan(4)
    copies = [i for i, n in enumerate(plan.optimized.nodes) if node_role(n) == "recompute"]
    assert copies and len(copies) == len(plan.plan.recomputed)


def test_stages_link_to_the_drawn_graph_only_where_their_ids_are_its_ids():
    lowered = digits_step()
    graph = lowered.optimized
    nodes, _ = stage_links(lowered.optimized_ir, graph)
    assert nodes == {i: i + 1 for i in range(len(graph.nodes))}  # line 0 is `graph @train_step {`
    decomposed = dict(lowered_stages(lowered))["decompose"]  # numbered before simplify renumbered it
    assert len(decomposed.splitlines()) != len(lowered.optimized_ir.splitlines())
    assert stage_links(decomposed, graph)[0] == {}
    memory_nodes, _ = stage_links(str(lowered.memory), graph)
    assert set(memory_nodes) == {b.value for b in lowered.memory.buffers}
    schedule_nodes, kernels = stage_links(str(lowered.schedule), graph)
    assert sorted(kernels) == list(range(len(lowered.schedule.kernels)))
    source_kernels = stage_links(lowered.source, graph)[1]
    assert sorted(source_kernels) == sorted(kernels)


def test_the_page_is_self_contained_and_holds_every_stage(tmp_path, backend):
    lowered = digits_step()
    path = lowered.report(tmp_path / "digits.html")
    html = open(path).read()
    assert "<script src" not in html and "<link" not in html and "@import" not in html
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
    data = page_data(html)
    names = [s["name"] for s in data["stages"]]
    texts = [s["text"] for s in data["stages"]]
    assert names[:3] == ["traced", "decompose", "simplify"] and len(set(texts)) == len(texts)
    shown = [lowered.ir, lowered.optimized_ir, str(lowered.schedule), str(lowered.memory), lowered.source]
    assert all(text in texts for text in shown + ([lowered.llvm_ir, lowered.asm] if backend == "llvm" else []))
    assert len(data["graph"]["nodes"]) == len(data["graph"]["views"]["nodes"]["items"]) == len(lowered.optimized.nodes)
    arena = [b for b in lowered.memory.buffers if b.offset is not None]
    assert len(re.findall(r'<rect class="buf role\d" data-node="\d+"', html)) == len(arena)


def test_the_remat_plan_marks_stored_and_recomputed_nodes(tmp_path):
    lowered = deep_remat_plan(32)
    data = page_data(open(lowered.report(tmp_path / "deep.html")).read())["graph"]
    plan = lowered.plan
    assert [f"%{i} {lowered.optimized.nodes[i].op.name}" for i in data["stored"]] == list(plan.stored)
    assert len(data["copies"]) == len(data["recomputed"]) == len(plan.recomputed) > 0
    nodes = lowered.optimized.nodes
    assert all(node_role(nodes[c]) == "recompute" and nodes[c].op is nodes[o].op
               for c, o in zip(data["copies"], data["recomputed"]))


def test_collapsed_views_cover_every_node_once():
    lowered = digits_step()
    views = graph_data(lowered.optimized, lowered.schedule, lowered.plan)["views"]
    n = len(lowered.optimized.nodes)
    for name in ("kernels", "modules"):
        members = sorted(i for item in views[name]["items"] for i in item[4])
        assert members == list(range(n)), name
    assert len(views["kernels"]["items"]) < n and len(views["modules"]["items"]) < n


def test_kernel_boxes_hold_only_their_kernels_nodes():
    lowered = deep_remat_plan(8)
    view = graph_data(lowered.optimized, lowered.schedule)["views"]["nodes"]
    at = {(item[0], item[1]): item[4][0] for item in view["items"]}
    assert view["boxes"]
    for top, left, bottom, right, label in view["boxes"]:
        body = set(lowered.schedule.kernels[int(label[1:])].body)
        inside = {at[(layer, slot)] for layer in range(top, bottom + 1) for slot in range(left, right + 1)
                  if (layer, slot) in at}
        assert inside <= body and len(inside) > 1


def test_frontier_and_profile_panels(tmp_path):
    from ffcompile.passes.remat import frontier

    lowered = deep_remat_plan(6)
    rows = frontier(deep_remat_plan(6, remat="store_all").optimized, fractions=(0.6,), time_limit=5)
    plain = ff.compile(lambda w, x: ff.tanh(x @ w).sum())
    args = np.ones((4, 4), np.float32), np.ones((2, 4), np.float32)
    profile = plain.lower(*args).profile(*args, steps=3)
    html = open(plain.lower(*args).report(tmp_path / "p.html", profile=profile)).read()
    assert len(re.findall(r'<g class="bar" data-kernel="\d+"', html)) == len(profile.kernels)
    html = open(lowered.report(tmp_path / "f.html", frontier=rows)).read()
    assert html.count('class="pt ') == len(rows)
    assert "frontier" in [s["name"] for s in page_data(html)["stages"]]


def test_cli_report_writes_the_page(tmp_path, capsys):
    out = tmp_path / "xor.html"
    assert main(["report", "xor", "--train", "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    roles = {row[4] for row in page_data(out.read_text())["graph"]["nodes"]}
    assert roles == {0, 1, 2, 4}  # input, forward, adjoint, update: an SGD step
    with pytest.raises(SystemExit):
        main(["report", "xor", "--budget", "lots", "-o", str(out)])
    assert "--budget must be a percentage" in capsys.readouterr().err


def test_cli_report_of_a_remat_plan_and_its_frontier(tmp_path):
    out = tmp_path / "digits.html"
    assert main(["report", "digits", "--grad", "--budget", "85%", "--sweep", "--time-limit", "5",
                 "-o", str(out)]) == 0
    html = out.read_text()
    data = page_data(html)
    names = [s["name"] for s in data["stages"]]
    assert names[:4] == ["traced", "decompose", "simplify", "remat"] and names[-1] == "frontier"
    assert data["graph"]["copies"] and 'class="chosen"' in html  # the plan is on its frontier


def test_an_unoptimized_program_reports_its_graph_without_kernels_or_arena(tmp_path):
    w, x = np.ones((4, 3), np.float32), np.ones((2, 4), np.float32)
    lowered = ff.compile(lambda w, x: ff.tanh(x @ w).sum(), optimize=False, backend="numpy").lower(w, x)
    html = open(lowered.report(tmp_path / "plain.html")).read()
    data = page_data(html)
    assert [s["name"] for s in data["stages"]][:2] == ["traced", "optimized"]
    assert set(data["graph"]["views"]) == {"nodes", "modules"} and 'class="arena"' not in html


def test_tangent_nodes_have_their_own_role_and_colour(tmp_path):
    """Forward mode's nodes (ff.jvp, jacfwd, hessian) are drawn as tangents, beside their primals."""
    x = np.ones(3)
    hvp = ff.compile(lambda x, v: ff.jvp(ff.grad(lambda x: (ff.tanh(x) ** 2).sum()), (x,), (v,)))
    html = open(hvp.lower(x, x).report(tmp_path / "t.html")).read()
    roles = {row[4] for row in page_data(html)["graph"]["nodes"]}
    assert roles == {0, 1, 2, 5}  # input, forward, adjoint, tangent
    assert "var(--tangent)" in html and '"tangent"' in html
