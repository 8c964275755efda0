"""The PCK-vs-threshold curve as a PNG (`lbdeploy eval --plot curve.png`), with Pillow.

One line per evaluated column (source and backend), the fraction of joints within each
threshold of the report's curve (a curve identical to an earlier one is dashed, shifted by a few
pixels and named so in the legend), a dashed marker at the dataset's threshold (e.g. PCKh@0.5). The
axes, ticks and legend come from `lbdeploy.plotting`, shared with `lbdeploy profile --plot`.
"""

from __future__ import annotations

from pathlib import Path

from lbdeploy.evaluation.pck import PCKReport
from lbdeploy.plotting import COLORS, Axes, Canvas, save_png

WIDTH, HEIGHT = 820, 520
BOX = (90, 50, WIDTH - 30, HEIGHT - 70)


def render_pck_curves(reports: dict[str, PCKReport], dataset: str = ""):
    """The curves of `reports` (column label -> PCKReport) as a Pillow RGB image; `dataset` names
    the data in the title (e.g. "mpii val")."""
    first = next(iter(reports.values()))
    thresholds = [t for t, _ in first.curve]
    length = "head-box length x 0.6" if first.norm == "head" else "torso diameter"
    canvas = Canvas(WIDTH, HEIGHT)
    title = f"{first.metric} vs threshold ({first.people} people{' of ' + dataset if dataset else ''})"
    axes = Axes(canvas, BOX, (0.0, max(thresholds)), (0.0, 100.0), title=title,
                x_label=f"threshold (distance / {length})", y_label=f"{first.metric} (% of joints)")
    axes.vertical_marker(first.threshold, f"{first.metric}@{first.threshold:g}")
    legend, drawn = [], []
    for index, (label, report) in enumerate(reports.items()):
        color = COLORS[index % len(COLORS)]
        values = [v for _, v in report.curve]
        same = [other for other, curve in drawn if curve == values]
        # a curve identical to one drawn before would hide it: dash it, shift it a little, and say so
        axes.line([t for t, _ in report.curve], values, color, dash=8 if same else 0, offset=3 * len(same))
        drawn.append((label, values))
        legend.append((f"{label}: {report.total:.1f} % at {report.threshold:g}"
                       + (f" (identical to {same[0]}, dashed)" if same else ""), color))
    axes.legend(legend, corner="top-left")  # curves rise from the bottom left
    return canvas.image


def write_pck_plot(reports: dict[str, PCKReport], path, dataset: str = "") -> Path:
    """Render the curves and save them as a PNG at `path` (parent folders are created).

    Returns:
        The written path.
    """
    return save_png(render_pck_curves(reports, dataset), path)
