"""The report's static pictures as inline SVG text (no matplotlib): the arena over the
kernel steps, the remat frontier, and per-kernel time. Elements that stand for a node or
a kernel carry data-node / data-kernel, which the page links to the graph and the text."""
from __future__ import annotations

from html import escape

from ..passes.memory import MemoryPlan
from .roles import ROLES, node_role

_FONT = 'font-family="ui-monospace, monospace" font-size="11"'


def _svg(width: int, height: int, body: list[str], cls: str) -> str:
    return (f'<svg class="{cls}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'xmlns="http://www.w3.org/2000/svg" {_FONT}>' + "".join(body) + "</svg>")


def _kib(nbytes: int) -> str:
    return f"{nbytes / 1024:.1f} KiB"


def arena_svg(plan: MemoryPlan, width: int = 1000, height: int = 280) -> str:
    """Buffers as rectangles: x the kernel steps they are live, y their arena offset.
    A buffer that takes over a dying input's storage in place starts with a bar;
    the line is the live bytes per step (the lower bound), the dashed lines the peak."""
    graph = plan.schedule.graph
    steps = max(len(plan.schedule.kernels), 1)
    left, bottom, top = 84, 30, 10
    plot_w, plot_h = width - left - 10, height - bottom - top
    sx, sy = plot_w / steps, plot_h / max(plan.arena_bytes, 1)

    def y(offset: float) -> float:
        return top + plot_h - offset * sy

    body = [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>']
    for b in plan.buffers:
        if b.offset is None:
            continue  # a graph output: written into the caller's array, not the arena
        x0, w = left + b.first * sx, (b.last - b.first + 1) * sx
        role = ROLES.index(node_role(graph.nodes[b.value]))
        tip = (f"%{b.value} {graph.nodes[b.value].op.name} {b.type}: offset {b.offset}, {b.size} B, "
               f"live kernels {b.first}..{b.last}" + (f", in place over %{b.reuses}" if b.reuses is not None else ""))
        body.append(f'<rect class="buf role{role}" data-node="{b.value}" x="{x0:.1f}" y="{y(b.offset + b.size):.1f}" '
                    f'width="{max(w, 1):.1f}" height="{max(b.size * sy, 1):.1f}"><title>{escape(tip)}</title></rect>')
        if b.reuses is not None:
            body.append(f'<line class="inplace" x1="{x0:.1f}" x2="{x0:.1f}" y1="{y(b.offset + b.size):.1f}" '
                        f'y2="{y(b.offset):.1f}"/>')
    for k, offset, size in plan.scratch:
        body.append(f'<rect class="scratch" x="{left + k * sx:.1f}" y="{y(offset + size):.1f}" width="{sx:.1f}" '
                    f'height="{max(size * sy, 1):.1f}"><title>kernel {k} scratch: {size} B</title></rect>')
    live = " ".join(f"{left + k * sx:.1f},{y(v):.1f} {left + (k + 1) * sx:.1f},{y(v):.1f}"
                    for k, v in enumerate(plan.timeline))
    body.append(f'<polyline class="live" points="{live}"><title>live bytes per kernel step</title></polyline>')
    peak = max(range(len(plan.timeline)), key=plan.timeline.__getitem__, default=0)
    body.append(f'<line class="peak" x1="{left}" x2="{left + plot_w}" y1="{y(plan.arena_bytes):.1f}" '
                f'y2="{y(plan.arena_bytes):.1f}"/>')
    body.append(f'<line class="peak" x1="{left + (peak + 0.5) * sx:.1f}" x2="{left + (peak + 0.5) * sx:.1f}" '
                f'y1="{top}" y2="{top + plot_h}"/>')
    body.append(f'<text x="{left + (peak + 0.5) * sx + 4:.1f}" y="{top + 12}">peak at kernel {peak}: '
                f'{_kib(plan.timeline[peak] if plan.timeline else 0)} live, arena {_kib(plan.arena_bytes)}</text>')
    body += _axes(left, top, plot_w, plot_h, steps, plan.arena_bytes, "kernel step", "offset")
    return _svg(width, height, body, "arena")


def _axes(left, top, plot_w, plot_h, steps: int, arena: int, xlabel: str, ylabel: str) -> list[str]:
    every = max(1, steps // 20)
    out = [f'<text x="{left + (k + 0.5) * plot_w / steps:.1f}" y="{top + plot_h + 13}" text-anchor="middle">{k}</text>'
           for k in range(0, steps, every)]
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 26}" text-anchor="middle">{xlabel}</text>')
    out += [f'<text x="{left - 4}" y="{top + plot_h - f * plot_h + 4:.1f}" text-anchor="end">{_kib(int(f * arena))}</text>'
            for f in (0, 0.5, 1)]
    out.append(f'<text x="10" y="{top + plot_h / 2:.1f}" transform="rotate(-90 10 {top + plot_h / 2:.1f})" '
               f'text-anchor="middle">{ylabel}</text>')
    return out


def frontier_svg(rows, chosen=None, width: int = 640, height: int = 300) -> str:
    """Arena peak against extra FLOPs for every strategy and budget of a sweep
    (`passes.remat.frontier` rows); `chosen` (a RematPlan) is ringed."""
    left, bottom, top, right = 84, 34, 10, 190
    plot_w, plot_h = width - left - right, height - bottom - top
    plans = [plan for _, _, plan in rows]
    max_flops = max((p.extra_flops for p in plans), default=0) or 1
    max_peak = max((p.store_all_peak for p in plans), default=0) or 1

    def at(plan) -> tuple[float, float]:
        return left + plan.extra_flops / max_flops * plot_w, top + plot_h - plan.peak_bytes / max_peak * plot_h

    body = [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>']
    optimal = sorted((at(p) for label, _, p in rows if label.startswith("optimal")), key=lambda xy: xy[0])
    if optimal:
        body.append('<polyline class="front" points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in optimal) + '"/>')
    for n, (label, _, plan) in enumerate(rows):
        x, y = at(plan)
        shape = "circle" if label.startswith("optimal") else "square"
        tip = f"{label}: peak {plan.peak_bytes} B, extra FLOPs {plan.extra_flops}, {len(plan.recomputed)} recomputed"
        mark = (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4"' if shape == "circle"
                else f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8"')
        body.append(f'{mark} class="pt {shape}"><title>{escape(tip)}</title></{"circle" if shape == "circle" else "rect"}>')
        body.append(f'<text x="{left + plot_w + 8}" y="{top + 12 + 13 * n}">{escape(label)}: '
                    f'{plan.peak_bytes / max_peak:.0%}</text>')
        if chosen is not None and (plan.peak_bytes, plan.extra_flops) == (chosen.peak_bytes, chosen.extra_flops):
            body.append(f'<circle class="chosen" cx="{x:.1f}" cy="{y:.1f}" r="8"><title>this report\'s plan</title></circle>')
    body.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">extra FLOPs '
                f'(recomputation), 0 .. {max_flops:.3g}</text>')
    body.append(f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{_kib(max_peak)}</text>')
    body.append(f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>')
    body.append(f'<text x="10" y="{top + plot_h / 2:.1f}" transform="rotate(-90 10 {top + plot_h / 2:.1f})" '
                f'text-anchor="middle">arena peak</text>')
    return _svg(width, height, body, "frontier")


def profile_svg(profile, wheres: list[str], width: int = 1000) -> str:
    """One bar per kernel, longest first: time, share of the native entry, GFLOP/s, and the
    user's file:line of its nodes (wheres[k])."""
    kernels = sorted(profile.kernels, key=lambda k: -k.seconds)
    row, label_w, value_w = 18, 400, 330  # columns: kernel, time and where, bar
    longest = max((k.seconds for k in kernels), default=0) or 1
    bar_x = label_w + value_w
    bar_w = width - bar_x - 10
    body = []
    for n, k in enumerate(kernels):
        y = 4 + n * row
        share = k.seconds / profile.entry_seconds if profile.entry_seconds else 0.0
        rate = f" {k.flops / k.seconds / 1e9:.1f} GFLOP/s" if k.seconds > 0 and k.flops else ""
        label = f"k{k.index} {k.kind} {k.what}"
        value = f"{k.seconds * 1e6:.2f} us {share:.0%}{rate}  {wheres[k.index]}"
        tip = f"kernel {k.index}: {k.seconds * 1e6:.2f} us ({share:.1%}){rate}; {wheres[k.index]}"
        body.append(f'<g class="bar" data-kernel="{k.index}"><title>{escape(tip)}</title>'
                    f'<text x="4" y="{y + row - 6}">{escape(label[:58])}</text>'
                    f'<text x="{label_w}" y="{y + row - 6}" class="val">{escape(value[:52])}</text>'
                    f'<rect x="{bar_x}" y="{y}" width="{max(k.seconds / longest * bar_w, 1):.1f}" '
                    f'height="{row - 4}" class="kind-{k.kind}"/></g>')
    return _svg(width, 8 + len(kernels) * row, body, "profile")
