"""Charts drawn on the server as SVG (no script, no CDN): stacked bars and a line."""
from __future__ import annotations

from typing import Sequence

from markupsafe import Markup, escape

#: A colour per run state, shared by every chart and legend.
STATE_COLORS = {
    "succeeded": "#2e9e55", "failed": "#d64541", "lost": "#8e2a26", "retrying": "#e0a526",
    "running": "#2f6fdf", "queued": "#9aa5b8", "scheduled": "#c5ccd8", "revoked": "#8a63d2",
    "skipped": "#b9a7e6",
}


def stacked_bars(labels: Sequence[str], series: dict[str, Sequence[float]],
                 colors: dict[str, str] | None = None, width: int = 720, height: int = 180,
                 title: str = "") -> Markup:
    """One bar per label, stacked by series (e.g. runs per hour by state), with a legend."""
    colors = colors or STATE_COLORS
    n = max(len(labels), 1)
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    peak = max(totals, default=0) or 1
    plot_h, bar_w = height - 30, width / n
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for i, label in enumerate(labels):
        y = plot_h
        for name, values in series.items():
            h = values[i] / peak * (plot_h - 18)  # room for the "max" label
            if h <= 0:
                continue
            y -= h
            parts.append(f'<rect x="{i * bar_w + 1:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" '
                         f'height="{h:.1f}" fill="{colors.get(name, "#888")}">'
                         f'<title>{escape(label)}: {escape(name)} {values[i]:g}</title></rect>')
    parts.append(f'<text x="0" y="{height - 14}" font-size="11" fill="#6b7280">'
                 f'{escape(labels[0] if labels else "")}</text>')
    parts.append(f'<text x="{width}" y="{height - 14}" font-size="11" fill="#6b7280" '
                 f'text-anchor="end">{escape(labels[-1] if labels else "")}</text>')
    parts.append(f'<text x="{width}" y="11" font-size="11" fill="#6b7280" text-anchor="end">'
                 f'max {peak:g}</text>')
    x = 0
    for name in series:
        parts.append(f'<rect x="{x}" y="{height - 9}" width="9" height="9" '
                     f'fill="{colors.get(name, "#888")}"/><text x="{x + 12}" y="{height - 1}" '
                     f'font-size="11" fill="#374151">{escape(name)}</text>')
        x += 18 + 7 * len(name)
    parts.append("</svg>")
    return Markup("".join(parts))


def line(values: Sequence[float | None], width: int = 360, height: int = 90, unit: str = "s",
         title: str = "") -> Markup:
    """A small line chart of values in order (gaps for None), e.g. durations of recent runs."""
    points = [(i, v) for i, v in enumerate(values) if v is not None]
    peak = max((v for _, v in points), default=0) or 1
    step = width / max(len(values) - 1, 1)
    coords = " ".join(f"{i * step:.1f},{height - 12 - v / peak * (height - 24):.1f}"
                      for i, v in points)
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<polyline points="{coords}" fill="none" stroke="#2f6fdf" stroke-width="2"/>'
        f'<text x="{width}" y="11" font-size="11" fill="#6b7280" text-anchor="end">'
        f'max {peak:.3g} {escape(unit)}</text></svg>'
    )
