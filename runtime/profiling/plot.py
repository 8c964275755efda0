"""Drawing a profile report as a PNG (`lbdeploy profile --plot out.png`), with Pillow.

The image has a latency histogram (runs per millisecond bin, one colour per result, a legend with
each result's median; outliers beyond Q3 + 3 IQR are counted in the last bin and named in the title) and, below it, one horizontal bar chart per result of its largest op types
(milliseconds per run). The axes, ticks, labels and legends come from `lbdeploy.plotting`, shared
with `lbdeploy eval --plot`; to change the layout, edit the constants and `_draw_*` helpers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lbdeploy.plotting import COLORS, Axes, Canvas, legend_height, save_png
from lbdeploy.runtime.profiling.report import ProfileReport

WIDTH = 900
HIST_HEIGHT = 340  # the histogram panel, labels included
BAR_ROW = 24
OPS_LEFT = 280  # room for op names left of the bars
MARGIN = 30
BINS = 30
OUTLIER_IQR = 3.0  # runs above Q3 + this x IQR of their result are outliers (counted in the last bin)


def histogram_range(samples: list[np.ndarray]) -> tuple[float, float]:
    """The latency range the histogram shows: from the fastest run to the slowest run that is not
    an outlier of its result (above Q3 + OUTLIER_IQR x IQR), so that one slow run does not squeeze
    every result into the first bin. Runs above it are counted in the last bin."""
    low = min(float(s.min()) for s in samples)
    high = low
    for s in samples:
        q1, q3 = np.percentile(s, [25, 75])
        high = max(high, min(float(s.max()), q3 + OUTLIER_IQR * max(q3 - q1, 0.01 * q3)))
    return low, high if high > low else low + 1e-3


def _draw_histogram(canvas: Canvas, report: ProfileReport) -> None:
    samples = [np.asarray(r.samples_s) * 1e3 for r in report.results]
    low, high = histogram_range(samples)
    edges = np.linspace(low, high, BINS + 1)
    counts = [np.histogram(np.minimum(s, high), edges)[0] for s in samples]
    above = [s[s > high] for s in samples]
    tallest = max(int(c.max()) for c in counts) or 1
    batch = report.results[0].batch
    box = (90, 50, WIDTH - MARGIN, HIST_HEIGHT - 60)
    # headroom so that the tallest bar stays below the legend in the top-right corner
    free = 1.0 - (legend_height(len(samples)) + 12) / (box[3] - box[1])
    slow = sum(len(a) for a in above)
    note = (f"; {slow} slower run{'s' if slow != 1 else ''} (up to {max(a.max() for a in above if len(a)):.1f} ms) "
            "in the last bin") if slow else ""
    axes = Axes(canvas, box, (edges[0], edges[-1]), (0, tallest / max(free, 0.3)),
                title=f"Latency of {report.runs} timed runs per result (batch {batch}){note}",
                x_label="latency per run (ms)", y_label="runs per bin", integer_y=True)
    slot = (edges[1] - edges[0]) / len(counts)
    for index, count in enumerate(counts):
        color = COLORS[index % len(COLORS)]
        for b, value in enumerate(count):
            if value:
                x0 = edges[b] + index * slot
                axes.bar(x0, x0 + slot * 0.9, 0, value, color)
    axes.legend([(f"{r.model.label}: median {r.latency_ms()['p50']:.2f} ms", COLORS[i % len(COLORS)])
                 for i, r in enumerate(report.results)])


def _runs(count: int) -> str:
    return "1 run" if count == 1 else f"{count} runs"


def _ops_height(result) -> int:
    return BAR_ROW * (max(len(result.breakdown.by_type), 1) + 1) + 90


def _draw_ops(canvas: Canvas, result, color, top: int) -> None:
    rows = result.breakdown.by_type
    if not rows:
        canvas.text((MARGIN, top + 20), f"{result.model.label}: {result.breakdown.note or 'no per-op breakdown'}"[:140],
                    title=True)
        return
    longest = max(row["per_run_ms"] for row in rows) or 1.0
    bottom = top + 40 + BAR_ROW * len(rows)
    # the x range leaves room right of the longest bar for its value label
    axes = Axes(canvas, (OPS_LEFT, top + 40, WIDTH - MARGIN, bottom), (0, longest * 1.3), (0, len(rows)),
                title=f"{result.model.label}: largest op types ({_runs(result.breakdown.runs)} profiled)",
                x_label="time per run (ms)", y_ticks=False)
    for index, row in enumerate(rows):
        middle = len(rows) - index - 0.5  # the largest on top
        axes.bar(0, row["per_run_ms"], middle - 0.35, middle + 0.35, color)
        axes.category(middle, row["name"][:38])
        canvas.text((axes.px(row["per_run_ms"]) + 4, axes.py(middle)),
                    f"{row['per_run_ms']:.3f} ({row['share']:.0%})", anchor="lm")


def render(report: ProfileReport):
    """The report as a Pillow RGB image (histogram on top, one op chart per result below)."""
    canvas = Canvas(WIDTH, HIST_HEIGHT + sum(_ops_height(r) for r in report.results))
    _draw_histogram(canvas, report)
    top = HIST_HEIGHT
    for index, result in enumerate(report.results):
        _draw_ops(canvas, result, COLORS[index % len(COLORS)], top)
        top += _ops_height(result)
    return canvas.image


def write_plot(report: ProfileReport, path) -> Path:
    """Render the report and save it as a PNG at `path` (parent folders are created)."""
    return save_png(render(report), path)
