"""Charts drawn on the server as inline SVG (no chart library, no script):
line charts with labelled axes and units, sparklines, and the flow graph
with its per-node and per-edge counts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape

PALETTE = ("#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#ec4899", "#14b8a6", "#64748b")


@dataclass
class Line:
    """One line: a label and (time, value) points on shared buckets."""

    label: str
    values: Sequence[int | float]
    color: str = ""


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """0 and round steps up to at least `top`."""
    if top <= 0:
        return [0, 1]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    # Counts have whole-number ticks: no 2.5 steps (nor fractions) once steps reach 1.
    steps = [m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= 1 or top < 1]
    steps = [x for x in steps if top < 1 or float(x).is_integer()] or [1]
    step = next((x for x in steps if x >= raw), steps[-1])
    n = math.ceil(top / step)
    return [round(i * step, 10) for i in range(n + 1)]


def compact(value: float) -> str:
    """1234 → 1.2k, 2500000 → 2.5M."""
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            text = f"{value / div:.1f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _x_ticks(buckets: Sequence[datetime], interval: str) -> list[tuple[int, str]]:
    """(index, label) of the x axis: about seven labels, on day boundaries
    when an hourly chart spans days."""
    n = len(buckets)
    if n == 0:
        return []
    if interval == "hour" and n > 36:
        midnights = [i for i, at in enumerate(buckets) if at.hour == 0]
        every = max(1, math.ceil(len(midnights) / 8))
        return [(i, buckets[i].strftime("%b %-d")) for i in midnights[::every]]
    step = max(1, math.ceil(n / 7))
    if interval == "hour":
        step = next((h for h in (1, 2, 3, 4, 6, 12) if n / h <= 8), 12)
        return [
            (i, at.strftime("%b %-d %H:%M") if i == 0 or at.hour == 0 else at.strftime("%H:%M"))
            for i, at in enumerate(buckets)
            if at.hour % step == 0
        ]
    return [(i, buckets[i].strftime("%b %-d")) for i in range(0, n, step)]


def line_chart(
    buckets: Sequence[datetime],
    lines: Sequence[Line],
    *,
    interval: str,
    unit: str,
    height: int = 220,
    width: int = 760,
    area: bool = True,
) -> Markup:
    """A line chart: y axis with round ticks and the unit, x axis with dates
    (UTC), one colour per line, a tooltip per point."""
    left, right, top, bottom = 56, 16, 14, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((max(line.values, default=0) for line in lines), default=0)
    ticks = nice_ticks(peak)
    y_max = ticks[-1] or 1
    n = max(1, len(buckets))

    def x(i: int) -> float:
        return left + (plot_w * (i + 0.5) / n)

    def y(v: float) -> float:
        return top + plot_h - plot_h * (v / y_max)

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(unit)} per {interval}" preserveAspectRatio="xMidYMid meet">'
    ]
    for t in ticks:
        ty = y(t)
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{ty:.1f}" y2="{ty:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{left - 8}" y="{ty + 4:.1f}" text-anchor="end">{compact(t)}</text>'
        )
    parts.append(
        f'<text class="axis-title" transform="translate(14 {top + plot_h / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle">{escape(unit)} / {interval}</text>'
    )
    parts.append(
        f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}"/>'
    )
    for i, label in _x_ticks(buckets, interval):
        parts.append(
            f'<line class="axis" x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top + plot_h}" '
            f'y2="{top + plot_h + 4}"/>'
        )
        parts.append(
            f'<text class="tick" x="{x(i):.1f}" y="{height - 8}" text-anchor="middle">{escape(label)}</text>'
        )
    for index, line in enumerate(lines):
        color = line.color or PALETTE[index % len(PALETTE)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(line.values))
        if area and len(lines) == 1 and line.values:
            base = top + plot_h
            parts.append(
                f'<polygon fill="{color}" fill-opacity="0.10" '
                f'points="{x(0):.1f},{base} {points} {x(len(line.values) - 1):.1f},{base}"/>'
            )
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        if n <= 62:
            for i, v in enumerate(line.values):
                when = buckets[i].strftime("%b %-d %H:%M" if interval == "hour" else "%b %-d")
                parts.append(
                    f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{color}">'
                    f"<title>{escape(line.label)}: {v:,} {escape(unit)} ({when} UTC)</title></circle>"
                )
    parts.append("</svg>")
    return Markup("".join(parts))


def stacked_bars(
    buckets: Sequence[datetime],
    lines: Sequence[Line],
    *,
    interval: str,
    unit: str,
    height: int = 240,
    width: int = 760,
) -> Markup:
    """Bars per bucket, one coloured segment per line stacked (a breakdown):
    the same axes as `line_chart`."""
    left, right, top, bottom = 56, 16, 14, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(1, len(buckets))
    sums = [sum(line.values[i] for line in lines) for i in range(len(buckets))]
    ticks = nice_ticks(max(sums, default=0))
    y_max = ticks[-1] or 1
    slot = plot_w / n
    bar = max(1.0, slot * 0.72)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(unit)} per {interval}" preserveAspectRatio="xMidYMid meet">'
    ]
    for t in ticks:
        ty = top + plot_h - plot_h * (t / y_max)
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{ty:.1f}" y2="{ty:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{left - 8}" y="{ty + 4:.1f}" text-anchor="end">{compact(t)}</text>'
        )
    parts.append(
        f'<text class="axis-title" transform="translate(14 {top + plot_h / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle">{escape(unit)} / {interval}</text>'
    )
    for i, at in enumerate(buckets):
        base = top + plot_h
        x0 = left + slot * i + (slot - bar) / 2
        when = at.strftime("%b %-d %H:%M" if interval == "hour" else "%b %-d")
        for index, line in enumerate(lines):
            v = line.values[i]
            if not v:
                continue
            h = plot_h * v / y_max
            base -= h
            color = line.color or PALETTE[index % len(PALETTE)]
            parts.append(
                f'<rect x="{x0:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{escape(line.label)}: {v:,} {escape(unit)} ({when} UTC)</title></rect>"
            )
    parts.append(
        f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}"/>'
    )
    for i, label in _x_ticks(buckets, interval):
        cx = left + slot * (i + 0.5)
        parts.append(
            f'<text class="tick" x="{cx:.1f}" y="{height - 8}" text-anchor="middle">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def legend(lines: Sequence[Line], totals: Sequence[int] | None = None) -> Markup:
    """Colour keys for a chart's lines (with each line's total)."""
    items = []
    for index, line in enumerate(lines):
        color = line.color or PALETTE[index % len(PALETTE)]
        total = f" <b>{totals[index]:,}</b>" if totals is not None else ""
        items.append(
            f'<span class="key"><i style="background:{color}"></i>{escape(line.label)}{total}</span>'
        )
    return Markup(f'<div class="legend">{"".join(items)}</div>')


def sparkline(values: Sequence[int | float], width: int = 120, height: int = 28) -> Markup:
    """A small line without axes (a list cell)."""
    if len(values) < 2:
        return Markup('<span class="muted">not enough history yet</span>')
    hi, lo = max(values), min(values)
    span = (hi - lo) or 1
    step = width / (len(values) - 1)
    pts = " ".join(
        f"{i * step:.1f},{height - 3 - (v - lo) / span * (height - 6):.1f}" for i, v in enumerate(values)
    )
    return Markup(
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
        f'<polyline fill="none" stroke="{PALETTE[0]}" stroke-width="1.5" points="{pts}"/></svg>'
    )


# -- the flow graph ---------------------------------------------------------------

NODE_W, NODE_H, GAP_X, GAP_Y = 210, 74, 40, 64


def _layers(start: str, edges: dict[str, list[tuple[str, str]]]) -> dict[str, int]:
    """Depth of each node: its longest distance from the start (the graph is acyclic)."""
    depth: dict[str, int] = {start: 0}
    order = [start]
    changed = True
    guard = 0
    while changed and guard < 200:
        changed, guard = False, guard + 1
        for node in list(order):
            for _label, target in edges.get(node, []):
                want = depth[node] + 1
                if depth.get(target, -1) < want:
                    depth[target] = want
                    changed = True
                    if target not in order:
                        order.append(target)
    return depth


def flow_graph(
    definition: dict[str, Any], stats: dict[str, Any], edge_list: dict[str, list[tuple[str, str]]]
) -> Markup:
    """The flow top-down: the trigger, then each node in layers with its
    entered / waiting / completed counts; each edge labelled with its name
    and how many runs took it."""
    nodes = {n["id"]: n for n in definition.get("nodes", [])}
    start = definition.get("start")
    if not nodes or start not in nodes:
        return Markup('<p class="muted">This flow has no nodes.</p>')
    depth = _layers(start, edge_list)
    for node_id in nodes:  # unreachable nodes go last
        depth.setdefault(node_id, max(depth.values()) + 1)
    rows: dict[int, list[str]] = {}
    for node_id, d in sorted(depth.items(), key=lambda kv: kv[1]):
        rows.setdefault(d, []).append(node_id)
    widest = max(len(r) for r in rows.values())
    width = max(widest * (NODE_W + GAP_X) + GAP_X, 2 * NODE_W)
    trigger_h = 44
    height = trigger_h + GAP_Y + len(rows) * (NODE_H + GAP_Y)
    pos: dict[str, tuple[float, float]] = {}
    for d, ids in rows.items():
        row_w = len(ids) * NODE_W + (len(ids) - 1) * GAP_X
        x0 = (width - row_w) / 2
        for i, node_id in enumerate(ids):
            pos[node_id] = (x0 + i * (NODE_W + GAP_X), trigger_h + GAP_Y + d * (NODE_H + GAP_Y))
    parts = [
        f'<svg class="flow-graph" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
        f'role="img" aria-label="flow graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#94a3b8"/></marker></defs>',
    ]
    trigger = definition.get("trigger", {})
    trigger_text = f"Trigger: {trigger.get('type', '?')}"
    if trigger.get("name"):
        trigger_text += f" “{trigger['name']}”"
    tx = (width - NODE_W) / 2
    parts.append(
        f'<rect class="trigger" x="{tx:.0f}" y="4" width="{NODE_W}" height="{trigger_h - 8}" rx="18"/>'
    )
    parts.append(
        f'<text class="node-title" x="{width / 2:.0f}" y="{trigger_h / 2 + 4:.0f}" text-anchor="middle">'
        f"{escape(trigger_text[:34])}</text>"
    )
    sx, sy = pos[start]
    parts.append(
        f'<path class="edge" d="M{width / 2:.0f},{trigger_h - 4} L{sx + NODE_W / 2:.0f},{sy}" '
        'marker-end="url(#arrow)"/>'
    )
    for source, outs in edge_list.items():
        if source not in pos:
            continue
        x1, y1 = pos[source]
        node_stats = stats.get(source) or {}
        taken = node_stats.get("edges", {}) if isinstance(node_stats, dict) else {}
        for k, (label, target) in enumerate(outs):
            if target not in pos:
                continue
            x2, y2 = pos[target]
            ax = x1 + NODE_W * (k + 1) / (len(outs) + 1)
            ay = y1 + NODE_H
            bx, by = x2 + NODE_W / 2, y2
            mid = (ay + by) / 2
            parts.append(
                f'<path class="edge" d="M{ax:.0f},{ay:.0f} C{ax:.0f},{mid:.0f} {bx:.0f},{mid:.0f} '
                f'{bx:.0f},{by:.0f}" marker-end="url(#arrow)"/>'
            )
            count = taken.get(label, 0)
            lx, ly = (ax + bx) / 2, mid
            text = f"{label.replace('branch:', 'if #').replace('split:', 'path ')} · {count:,}"
            parts.append(
                f'<rect class="edge-label-bg" x="{lx - 4 * len(text) - 6:.0f}" y="{ly - 10:.0f}" '
                f'width="{8 * len(text) + 12:.0f}" height="18" rx="9"/>'
                f'<text class="edge-label" x="{lx:.0f}" y="{ly + 3:.0f}" text-anchor="middle">'
                f"{escape(text)}</text>"
            )
    for node_id, (nx, ny) in pos.items():
        node = nodes.get(node_id, {})
        s = stats.get(node_id) or {}
        parts.append(
            f'<g class="node" data-node="{escape(node_id)}"><rect x="{nx:.0f}" y="{ny:.0f}" width="{NODE_W}" '
            f'height="{NODE_H}" rx="10"/>'
            f'<text class="node-type" x="{nx + 12:.0f}" y="{ny + 20:.0f}">'
            f"{escape(str(node.get('type', '')).upper())}</text>"
            f'<text class="node-title" x="{nx + 12:.0f}" y="{ny + 40:.0f}">{escape(node_id[:26])}</text>'
            f'<text class="node-counts" x="{nx + 12:.0f}" y="{ny + 61:.0f}">'
            f"entered {s.get('entered', 0):,} · waiting {s.get('waiting', 0):,} · "
            f"done {s.get('completed', 0):,}"
            "</text></g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
