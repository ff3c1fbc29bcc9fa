"""Tiny server-side SVG charts for the dashboard: no JavaScript, no external library.

Each category and each action has one colour, the same in every chart and in the badges
(static/app.css); ranked lists that are not categories or actions (recipients, senders)
use one neutral colour, so a colour always means the same thing."""

from __future__ import annotations

import math
from html import escape

COLORS = {"clean": "#2e7d32", "bulk": "#1565c0", "spam": "#e65100", "phishing": "#c2185b",
          "malware": "#6a1b9a", "bec": "#c62828", "policy": "#455a64",
          "accept": "#43a047", "tag": "#f9a825", "quarantine": "#795548", "reject": "#b71c1c",
          # our own senders' mail (the Internal page)
          "internal": "#00897b", "outbound": "#3949ab", "stopped": "#795548",
          "opened": "#c62828", "refused": "#b71c1c", "deferred": "#f9a825"}
NEUTRAL = "#5c6bc0"


def color(key: str, i: int = 0) -> str:
    return COLORS.get(key, NEUTRAL)


def nice_ticks(top: int, most: int = 5) -> list[int]:
    """0 and round steps (1, 2, 5 × 10^n) up to at least `top`, at most `most` + 1 ticks."""
    if top <= 0:
        return [0, 1]
    raw = top / most
    mag = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    step = max(1, int(step))
    return list(range(0, math.ceil(top / step) * step + 1, step))


def _bucket_label(b: str, hourly: bool) -> str:
    # "2025-06-01 14:00" -> "14:00" (and the day at midnight); "2025-06-01" -> "06-01"
    if hourly:
        return b[11:] if not b.endswith(" 00:00") else b[5:10]
    return b[5:]


def stacked_bars(points: list[dict[str, object]], title: str, all_buckets: list[str] | None = None,
                 width: int = 1200, height: int = 260, compact: bool = False,
                 unit: str = "messages") -> str:
    """Volume over time: one bar per bucket, stacked by category (or action), with a y axis
    of round numbers and a label saying what it counts. It scales to the card's width.
    `compact`: the same chart drawn for a phone's width (fewer labels, larger type), which
    the stylesheet shows instead of the wide one on narrow screens. `unit`: what a bar
    counts, for the y axis' title."""
    if compact:
        width, height = 480, 300
    buckets: list[str] = list(all_buckets or [])
    series: dict[str, dict[str, int]] = {}
    for p in points:
        b, c, n = str(p["bucket"]), str(p["category"]), int(p["count"])  # type: ignore[call-overload]
        if b not in buckets:
            buckets.append(b)
        series.setdefault(c, {})[b] = n
    buckets.sort()
    hourly = bool(buckets) and len(buckets[0]) > 10
    noun, unit = unit, f"{unit} per hour" if hourly else f"{unit} per day"
    fs = 16 if compact else 12  # type size, in the chart's own units
    cats = sorted(series)
    # The legend, in as many rows as the width needs.
    legend: list[tuple[str, float, int]] = []
    lx, row = 64.0, 0
    for c in cats:
        w = 30 + fs * 0.62 * len(c)
        if lx + w > width and lx > 64:
            lx, row = 64.0, row + 1
        legend.append((c, lx, row))
        lx += w
    rows = (legend[-1][2] + 1) if legend else 1
    height += (rows - 1) * (fs + 6)
    pad_l, pad_r, pad_b, pad_t = 64, 12, 30 + rows * (fs + 6), 34
    plot_w, plot_h = width - pad_l - pad_r, height - pad_b - pad_t
    totals = [sum(series[c].get(b, 0) for c in series) for b in buckets]
    ticks = nice_ticks(max(totals or [0]))
    top = ticks[-1]
    base_y = pad_t + plot_h
    bar_class = "bar" if compact else "datapoint"  # tests and scripts read the wide one
    out = [f'<svg class="chart {"compact" if compact else "wide"}" role="img" aria-label="{escape(title)}" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="{pad_l}" y="20" font-size="{fs + 3}" font-weight="bold">{escape(title)}</text>',
           # the y axis' title, along it
           f'<text class="y-title" transform="translate({fs + 2} {pad_t + plot_h / 2:.0f}) rotate(-90)" '
           f'text-anchor="middle" font-size="{fs}">{unit}</text>']
    for t in ticks:
        ty = base_y - plot_h * t / top
        out.append(f'<line x1="{pad_l}" y1="{ty:.1f}" x2="{pad_l + plot_w}" y2="{ty:.1f}" '
                   f'stroke="{"#999" if t == 0 else "#e3e3e3"}"/>'
                   f'<text class="y-tick" x="{pad_l - 6}" y="{ty + fs / 3:.1f}" text-anchor="end" '
                   f'font-size="{fs}">{t}</text>')
    if not any(totals):
        nothing = "no mail" if noun == "messages" else "none"
        out.append(f'<text x="{pad_l + plot_w / 2:.0f}" y="{pad_t + plot_h / 2:.0f}" text-anchor="middle" '
                   f'font-size="{fs + 2}" fill="#666">{nothing} in this period</text>')
    slot = plot_w / max(len(buckets), 1)
    bw = min(48.0, max(2.0, slot * 0.75))
    every = max(1, math.ceil(len(buckets) / (5 if compact else 12)))  # a few x labels only
    for i, b in enumerate(buckets):
        y: float = base_y  # bar heights taken off it are fractional
        x = pad_l + i * slot + (slot - bw) / 2
        for c in cats:
            n = series[c].get(b, 0)
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            out.append(f'<rect class="{bar_class}" data-bucket="{escape(b)}" data-category="{escape(c)}" '
                       f'data-count="{n}" x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                       f'fill="{color(c)}"><title>{escape(b)} {escape(c)}: {n}</title></rect>')
        if i % every == 0:
            out.append(f'<text class="x-tick" x="{x + bw / 2:.1f}" y="{base_y + fs + 4}" '
                       f'text-anchor="middle" font-size="{fs}">{escape(_bucket_label(b, hourly))}</text>')
    for c, cx, r in legend:
        ly = base_y + fs + 12 + r * (fs + 6)
        out.append(f'<rect x="{cx:.0f}" y="{ly + 2}" width="{fs - 1}" height="{fs - 1}" fill="{color(c)}"/>'
                   f'<text x="{cx + fs + 3:.0f}" y="{ly + fs}" font-size="{fs}">{escape(c)}</text>')
    out.append("</svg>")
    return "".join(out)


def hbars(items: list[tuple[str, int]], title: str, width: int = 360) -> str:
    """A ranked list as horizontal bars, each with its number."""
    row_h = 20
    height = 26 + row_h * max(len(items), 1) + 6
    top = max((n for _, n in items), default=0) or 1
    out = [f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="0" y="15" font-size="14" font-weight="bold">{escape(title)}</text>']
    if not items:
        out.append('<text x="0" y="40" font-size="12" fill="#666">nothing yet</text>')
    label_w, bar_max = 170, width - 170 - 44
    for i, (k, n) in enumerate(items):
        y = 26 + i * row_h
        w = bar_max * n / top
        label = k if len(k) <= 28 else k[:27] + "…"
        out.append(f'<text x="0" y="{y + 13}" font-size="12">{escape(label or "(empty)")}</text>'
                   f'<rect class="datapoint" data-key="{escape(k)}" data-count="{n}" x="{label_w}" y="{y + 3}" '
                   f'width="{max(w, 1):.1f}" height="{row_h - 6}" fill="{color(k)}"><title>{escape(k)}: {n}</title></rect>'
                   f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" font-size="12">{n}</text>')
    out.append("</svg>")
    return "".join(out)
