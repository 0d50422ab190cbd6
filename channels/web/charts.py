"""Server-rendered SVG charts for the dashboard: no JavaScript, no third-party assets.

Every label is escaped; the result is marked safe for Jinja only after that.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 560, 220
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 44, 12, 14, 40
PALETTE = ("#2563eb", "#16a34a", "#dc2626", "#d97706", "#7c3aed", "#0891b2")


def _scale(maximum: float) -> float:
    """A round top for the y axis (1, 2, 5 x 10^n) at or above ``maximum``."""
    if maximum <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(maximum))) - 1)
    for step in (1, 2, 5, 10):
        if step * magnitude >= maximum:
            return float(step * magnitude)
    return float(10 * magnitude)


def _frame(title: str, top: float, unit: str, body: str) -> Markup:
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    grid = []
    for i in range(5):
        value = top * i / 4
        y = PAD_TOP + plot_h - plot_h * i / 4
        label = f"{value:g}{unit}"
        grid.append(
            f'<line x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{PAD_LEFT - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">{escape(label)}</text>'
        )
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{"".join(grid)}{body}</svg>'
    )


def bar_chart(points: Sequence[tuple[str, float]], *, title: str, unit: str = "", color: str = PALETTE[0]) -> Markup:
    """Vertical bars, one per (label, value); labels thinned out when crowded."""
    if not points:
        return empty_chart(title)
    top = _scale(max(v for _, v in points))
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = plot_w / len(points)
    every = max(1, len(points) // 8)
    parts = []
    for i, (label, value) in enumerate(points):
        h = plot_h * (value / top)
        x = PAD_LEFT + i * slot + slot * 0.15
        y = PAD_TOP + plot_h - h
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" fill="{color}">'
            f"<title>{escape(label)}: {value:g}{escape(unit)}</title></rect>"
        )
        if i % every == 0:
            parts.append(
                f'<text x="{x + slot * 0.35:.1f}" y="{HEIGHT - PAD_BOTTOM + 16}" class="axis" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    return _frame(title, top, unit, "".join(parts))


def line_chart(series: dict[str, Sequence[tuple[str, float]]], *, title: str, unit: str = "") -> Markup:
    """One polyline per named series over shared x labels, with a legend."""
    named = {name: list(points) for name, points in series.items() if points}
    if not named:
        return empty_chart(title)
    labels = list(next(iter(named.values())))
    count = max(len(points) for points in named.values())
    top = _scale(max(v for points in named.values() for _, v in points))
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    step = plot_w / max(1, count - 1)
    parts = []
    for n, (name, points) in enumerate(named.items()):
        color = PALETTE[n % len(PALETTE)]
        coords = " ".join(
            f"{PAD_LEFT + i * step:.1f},{PAD_TOP + plot_h - plot_h * (v / top):.1f}" for i, (_, v) in enumerate(points)
        )
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        for i, (label, value) in enumerate(points):
            cx, cy = PAD_LEFT + i * step, PAD_TOP + plot_h - plot_h * (value / top)
            parts.append(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{color}">'
                f"<title>{escape(name)} {escape(label)}: {value:g}{escape(unit)}</title></circle>"
            )
        parts.append(
            f'<rect x="{PAD_LEFT + n * 120}" y="{HEIGHT - 14}" width="10" height="10" fill="{color}"/>'
            f'<text x="{PAD_LEFT + n * 120 + 14}" y="{HEIGHT - 5}" class="axis">{escape(name)}</text>'
        )
    every = max(1, len(labels) // 8)
    for i, (label, _) in enumerate(labels):
        if i % every == 0:
            parts.append(
                f'<text x="{PAD_LEFT + i * step:.1f}" y="{HEIGHT - PAD_BOTTOM + 14}" class="axis" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    return _frame(title, top, unit, "".join(parts))


def ratio_bars(rows: Sequence[tuple[str, float | None]], *, title: str) -> Markup:
    """Horizontal 0-100 % bars (compliance, deflection, response rates); None shows as "no data"."""
    if not rows:
        return empty_chart(title)
    row_h = 30
    height = PAD_TOP + row_h * len(rows) + 8
    label_w = 190
    bar_w = WIDTH - label_w - 70
    parts = []
    for i, (label, ratio) in enumerate(rows):
        y = PAD_TOP + i * row_h
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" class="axis" text-anchor="end">{escape(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{bar_w}" height="16" class="track"/>')
        if ratio is None:
            parts.append(f'<text x="{label_w + 6}" y="{y + 15}" class="axis">no data</text>')
            continue
        share = max(0.0, min(1.0, ratio))
        color = PALETTE[1] if share >= 0.8 else PALETTE[3] if share >= 0.5 else PALETTE[2]
        parts.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{bar_w * share:.1f}" height="16" fill="{color}">'
            f"<title>{escape(label)}: {share * 100:.1f}%</title></rect>"
            f'<text x="{label_w + bar_w + 8}" y="{y + 15}" class="axis">{share * 100:.1f}%</text>'
        )
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{"".join(parts)}</svg>'
    )


def empty_chart(title: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} 60" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        f'<text x="{WIDTH / 2}" y="34" class="axis" text-anchor="middle">No data for this period yet</text></svg>'
    )
