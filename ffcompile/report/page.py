"""Assemble the report: one self-contained HTML file (CSS, JS and data inlined; no network).

    lowered.report("report.html")                    # any Lowered (pipeline.py)
    ffcompile report MODEL [--train] [--budget 50%] [--sweep] [--profile] -o report.html

render_report works over a list of (stage name, text) pairs, so new pipeline stages
drop in as more pairs; docs/report.md describes each panel.
"""
from __future__ import annotations

import json
from html import escape
from importlib import resources

from ..ir import Graph
from ..passes.memory import MemoryPlan
from ..passes.schedule import Schedule
from .charts import arena_svg, frontier_svg, profile_svg
from .roles import ROLES
from .stages import lowered_stages, stage_links
from .views import graph_data, user_line

COLLAPSE_ABOVE = 2000  # nodes: bigger graphs open collapsed by kernel (the node view is a click away)


def write_report(lowered, path, frontier=None, profile=None) -> str:
    """Write the report of a Lowered to path; frontier: `passes.remat.frontier` rows
    (a sweep), profile: a KernelProfile of this program. Returns the path."""
    extra = []
    if profile is not None:
        extra.append(("profile", str(profile)))
    if frontier is not None:
        extra.append(("frontier", "".join(f"// {label}\n{plan}" for label, _, plan in frontier)))
    memory = lowered.memory
    if memory is not None and memory.batch is not None:  # one plan for every size: drawn at the reference
        memory = memory.at(memory.batch.reference)
    html = render_report(lowered_stages(lowered, extra), lowered.optimized, lowered.schedule,
                         memory, lowered.plan, frontier, profile)
    with open(path, "w", encoding="utf-8") as f:
        f.write(html)
    return str(path)


def render_report(stages: list[tuple[str, str]], graph: Graph, schedule: Schedule | None,
                  memory: MemoryPlan | None, plan=None, frontier=None, profile=None) -> str:
    """The HTML text. graph is the one drawn (the final IR: what schedule and memory number)."""
    linked = []
    for name, text in stages:
        nodes, kernels = stage_links(text, graph)
        linked.append({"name": name, "text": text, "nodes": nodes, "kernels": kernels})
    first = next((k for k, s in enumerate(linked) if s["nodes"]), 0)
    data = {"graph": graph_data(graph, schedule, plan), "stages": linked, "first_stage": first,
            "collapse_above": COLLAPSE_ABOVE}
    pictures = []
    if memory is not None:
        pictures.append(_panel("Arena", "Each buffer over the kernel steps it is live (x) at its arena offset (y), "
                               "colored by role; a bar at a buffer's start: it took over a dying input's storage in "
                               "place. The line is the live bytes per step, the dashed lines the peak.",
                               arena_svg(memory)))
    if frontier is not None:
        pictures.append(_panel("Memory vs recompute frontier", "Every strategy and the optimal plan at each "
                               "budget: arena peak against extra FLOPs; this report's plan is ringed.",
                               frontier_svg(frontier, plan)))
    if profile is not None and schedule is not None:
        wheres = [_kernel_where(graph, kernel.body) for kernel in schedule.kernels]
        total = sum(k.seconds for k in profile.kernels)
        pictures.append(_panel("Time per kernel", f"Mean of {profile.steps} runs: native entry "
                               f"{profile.entry_seconds * 1e6:.1f} us, kernels {total * 1e6:.1f} us. "
                               "Click a bar for its kernel in the graph and the schedule.",
                               f'<div class="scroll">{profile_svg(profile, wheres)}</div>'))
    return _PAGE.format(title=escape(f"ffcompile report: @{graph.name}"), css=_asset("page.css"),
                        summary=_summary(graph, schedule, memory, plan, profile), legend=_legend(),
                        pictures="".join(pictures), js=_asset("page.js"),
                        data=json.dumps(data, separators=(",", ":")).replace("</", "<\\/"))


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _kernel_where(graph: Graph, body) -> str:
    """The distinct file:line of a kernel's nodes, in order (where the user wrote them)."""
    seen = []
    for i in body:
        where = user_line(graph.nodes[i])
        if where and where not in seen:
            seen.append(where)
    return ", ".join(seen[:3]) + (" …" if len(seen) > 3 else "")


def _summary(graph, schedule, memory, plan, profile) -> str:
    facts = [("nodes", len(graph.nodes))]
    if schedule is not None:
        facts.append(("kernels", len(schedule.kernels)))
    if memory is not None:
        facts += [("arena", f"{memory.arena_bytes:,} B"), ("liveness bound", f"{memory.lower_bound:,} B")]
    if plan is not None:
        facts.append(("remat", f"{plan.strategy}: peak {plan.peak_bytes / max(plan.store_all_peak, 1):.0%} of "
                               f"store_all, {len(plan.stored)} stored, {len(plan.recomputed)} recomputed"))
    if profile is not None:
        facts.append(("native entry", f"{profile.entry_seconds * 1e6:.1f} us"))
    return "".join(f"<span>{escape(k)} <b>{escape(str(v))}</b></span>" for k, v in facts)


def _legend() -> str:
    roles = "".join(f'<span><i style="background:var(--{r})"></i>{r}</span>' for r in ROLES)
    return (roles + '<span><i style="border:2.5px solid #f2c200"></i>stored</span>'
            '<span><i style="border:2px dashed #9b59b6"></i>recomputed</span>')


def _panel(title: str, note: str, svg: str) -> str:
    return f'<div class="panel"><h2>{escape(title)}</h2><p class="note">{escape(note)}</p>{svg}</div>'


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{css}</style></head>
<body>
<header><h1>{title}</h1><div class="summary">{summary}</div></header>
<main>
<div class="panel" id="graphpanel">
<div class="toolbar"><span class="label">graph</span><span id="views"></span><button id="fit">fit</button>
<div class="legend">{legend}</div></div>
<svg id="graph" xmlns="http://www.w3.org/2000/svg"></svg>
<div id="selected">click a node: its operands turn red, its users green, its line is marked in the text</div>
</div>
<div class="panel" id="textpanel">
<div class="toolbar" id="stages"><span class="label">stage</span></div>
<div id="textwrap"><div id="mark"></div><pre id="text"></pre></div>
</div>
</main>
<section class="pictures">{pictures}</section>
<div id="tip"></div>
<script type="application/json" id="data">{data}</script>
<script>{js}</script>
</body></html>
"""
