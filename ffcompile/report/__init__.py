"""A self-contained HTML report of a compilation: every stage's text, the graph as a
layered DAG, the arena, the remat frontier and per-kernel time (docs/report.md)."""
from .page import render_report, write_report

__all__ = ["render_report", "write_report"]
