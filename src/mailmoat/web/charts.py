"""Tiny server-side SVG charts for the dashboard: no JavaScript, no external library."""

from __future__ import annotations

from html import escape

# Bulk is wanted, automated mail, not a threat: a calm blue, next to clean's green.
COLORS = {"clean": "#4caf50", "bulk": "#64b5f6", "spam": "#ff9800", "phishing": "#e91e63",
          "malware": "#9c27b0", "bec": "#f44336", "policy": "#607d8b", "accept": "#4caf50", "tag": "#ffc107",
          "quarantine": "#ff5722", "reject": "#b71c1c"}
_FALLBACK = ["#3f51b5", "#009688", "#795548", "#cddc39", "#00bcd4", "#8bc34a"]


def color(key: str, i: int = 0) -> str:
    return COLORS.get(key, _FALLBACK[i % len(_FALLBACK)])


def stacked_bars(points: list[dict[str, object]], title: str, all_buckets: list[str] | None = None,
                 width: int = 720, height: int = 220) -> str:
    """Volume over time: one bar per bucket, stacked by category."""
    buckets: list[str] = list(all_buckets or [])
    series: dict[str, dict[str, int]] = {}
    for p in points:
        b, c, n = str(p["bucket"]), str(p["category"]), int(p["count"])  # type: ignore[call-overload]
        if b not in buckets:
            buckets.append(b)
        series.setdefault(c, {})[b] = n
    buckets.sort()
    # Bars in data order; the x-axis labels every few buckets.
    pad_l, pad_b, pad_t = 40, 40, 24
    plot_w, plot_h = width - pad_l - 10, height - pad_b - pad_t
    totals = [sum(series[c].get(b, 0) for c in series) for b in buckets]
    top = max(totals or [0]) or 1
    out = [f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="{pad_l}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
           f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{pad_l + plot_w}" y2="{pad_t + plot_h}" stroke="#999"/>',
           f'<text x="4" y="{pad_t + 10}" font-size="10">{top}</text>']
    if not buckets:
        out.append(f'<text x="{pad_l + 10}" y="{pad_t + plot_h / 2}" font-size="12">no mail in this period</text>')
    slot = plot_w / max(len(buckets), 1)
    bw = min(60.0, max(2.0, slot * 0.8))
    cats = sorted(series)
    for i, b in enumerate(buckets):
        y: float = pad_t + plot_h  # bar heights taken off it are fractional
        x = pad_l + i * slot + (slot - bw) / 2
        for j, c in enumerate(cats):
            n = series[c].get(b, 0)
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            out.append(f'<rect class="datapoint" data-bucket="{escape(b)}" data-category="{escape(c)}" '
                       f'data-count="{n}" x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                       f'fill="{color(c, j)}"><title>{escape(b)} {escape(c)}: {n}</title></rect>')
        if len(buckets) <= 12 or i % max(1, len(buckets) // 6) == 0:
            out.append(f'<text x="{x:.1f}" y="{height - 22}" font-size="9">{escape(b[5:])}</text>')
    for j, c in enumerate(cats):
        out.append(f'<rect x="{pad_l + j * 90}" y="{height - 12}" width="10" height="10" fill="{color(c, j)}"/>'
                   f'<text x="{pad_l + j * 90 + 14}" y="{height - 3}" font-size="10">{escape(c)}</text>')
    out.append("</svg>")
    return "".join(out)


def hbars(items: list[tuple[str, int]], title: str, width: int = 350) -> str:
    """A ranked list as horizontal bars."""
    row_h = 18
    height = 24 + row_h * max(len(items), 1) + 6
    top = max((n for _, n in items), default=0) or 1
    out = [f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="0" y="14" font-size="13" font-weight="bold">{escape(title)}</text>']
    if not items:
        out.append('<text x="0" y="36" font-size="12">nothing yet</text>')
    label_w, bar_max = 170, width - 170 - 40
    for i, (k, n) in enumerate(items):
        y = 24 + i * row_h
        w = bar_max * n / top
        label = k if len(k) <= 28 else k[:27] + "…"
        out.append(f'<text x="0" y="{y + 12}" font-size="11">{escape(label or "(empty)")}</text>'
                   f'<rect class="datapoint" data-key="{escape(k)}" data-count="{n}" x="{label_w}" y="{y + 2}" '
                   f'width="{max(w, 1):.1f}" height="{row_h - 5}" fill="{color(k, i)}"><title>{escape(k)}: {n}</title></rect>'
                   f'<text x="{label_w + w + 4:.1f}" y="{y + 12}" font-size="11">{n}</text>')
    out.append("</svg>")
    return "".join(out)
