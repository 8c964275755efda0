"""Drawing a profile report as a PNG with Pillow (`lbdeploy profile --plot out.png`); no matplotlib.

The image has a latency histogram (one colour per result, shared millisecond bins) and, below it,
one bar chart per result of its largest op types (per-run milliseconds). To change the layout,
edit the constants and `_draw_*` helpers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.profiling.report import ProfileReport

WIDTH = 900
HIST_HEIGHT = 300
BAR_ROW = 22
MARGIN = 50
BINS = 30
COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _draw_histogram(draw, report: ProfileReport, top: int) -> None:
    samples = [np.asarray(r.samples_s) * 1e3 for r in report.results]
    low, high = min(s.min() for s in samples), max(s.max() for s in samples)
    edges = np.linspace(low, high if high > low else low + 1e-3, BINS + 1)
    counts = [np.histogram(s, edges)[0] for s in samples]
    tallest = max(int(c.max()) for c in counts) or 1
    left, right, bottom = MARGIN, WIDTH - MARGIN, top + HIST_HEIGHT - 30
    plot_height = HIST_HEIGHT - 70
    draw.text((left, top + 5), f"latency histogram ({len(samples[0])} runs each), ms", fill="black")
    draw.line([(left, bottom), (right, bottom)], fill="black")
    bin_width = (right - left) / BINS
    for index, (result, count) in enumerate(zip(report.results, counts)):
        color = COLORS[index % len(COLORS)]
        slot = bin_width / len(counts)
        for b, value in enumerate(count):
            if value:
                x0 = left + b * bin_width + index * slot
                draw.rectangle([x0, bottom - value / tallest * plot_height, x0 + max(slot - 1, 1), bottom], fill=color)
        draw.text((right - 220, top + 5 + 14 * index), f"{result.target.label}: p50 "
                  f"{result.latency_ms()['p50']:.2f} ms", fill=color)
    for fraction in (0.0, 0.5, 1.0):
        draw.text((left + fraction * (right - left) - 15, bottom + 5),
                  f"{edges[0] + fraction * (edges[-1] - edges[0]):.2f}", fill="black")


def _draw_ops(draw, result, color, top: int) -> int:
    rows = result.breakdown.by_type
    title = "largest op types, ms per run" if rows else (result.breakdown.note or "no per-op breakdown")
    draw.text((MARGIN, top + 5), f"{result.target.label}: {title}"[:140], fill="black")
    if not rows:
        return top + 2 * BAR_ROW
    longest = max(row["per_run_ms"] for row in rows) or 1.0
    bar_left = MARGIN + 260  # names on the left, bars after them
    for index, row in enumerate(rows):
        y = top + BAR_ROW * (index + 1) + 5
        draw.text((MARGIN, y + 3), row["name"][:40], fill="black")
        length = (WIDTH - MARGIN - bar_left - 70) * row["per_run_ms"] / longest
        draw.rectangle([bar_left, y, bar_left + max(length, 1), y + BAR_ROW - 6], fill=color)
        draw.text((bar_left + length + 5, y + 3), f"{row['per_run_ms']:.3f}", fill="black")
    return top + BAR_ROW * (len(rows) + 2)


def render(report: ProfileReport):
    """The report as a Pillow RGB image (histogram on top, one op chart per result below)."""
    from PIL import Image, ImageDraw

    height = HIST_HEIGHT + sum(BAR_ROW * (max(len(r.breakdown.by_type), 1) + 2) for r in report.results) + 20
    image = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    _draw_histogram(draw, report, 0)
    top = HIST_HEIGHT
    for index, result in enumerate(report.results):
        top = _draw_ops(draw, result, COLORS[index % len(COLORS)], top)
    return image


def write_plot(report: ProfileReport, path) -> Path:
    """Render the report and save it as a PNG at `path` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    render(report).save(path, format="PNG")
    return path
