"""Charts as PNG with Pillow (no matplotlib): the axes, ticks, labels and legends every plot shares.

Used by `lbdeploy profile --plot` (runtime/profiling/plot.py) and `lbdeploy eval --plot`
(lbdeploy/evaluation/plot.py). A chart is drawn on a `Canvas` in one or more `Axes`:

    canvas = Canvas(800, 500)
    axes = Axes(canvas, (70, 40, 780, 440), x_range=(0, 1), y_range=(0, 100),
                title="PCKh vs threshold", x_label="threshold", y_label="PCKh (%)")
    axes.line([0, 0.5, 1], [0, 80, 95], COLORS[0])
    axes.legend([("torch", COLORS[0])])
    canvas.save("curve.png")

To add a kind of mark (scatter, error bars), add an `Axes` method that maps data with `px`/`py`.
"""

from __future__ import annotations

import math
from pathlib import Path

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
GRID = (225, 225, 225)
TEXT = (20, 20, 20)
FONT_SIZE = 13
TITLE_SIZE = 15
TICK = 5


def font(size: int = FONT_SIZE):
    """Pillow's bundled scalable font (Aileron, Pillow >= 10.1) at `size` pixels.

    At Pillow's default size of 10 pixels its spaces round to almost nothing ("runseach"); from
    13 pixels on, text reads normally.
    """
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def nice_ticks(low: float, high: float, count: int = 8, integer: bool = False) -> list[float]:
    """About `count` round tick values (steps of 1, 2 or 5 x 10^k) covering [low, high]; with
    `integer`, steps of at least 1 (for counts, which have no halves)."""
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(count - 1, 1)
    if integer:
        raw = max(raw, 1.0)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step + 1e-9) + 1)]


def tick_label(value: float, step: float) -> str:
    """A tick value with as many decimals as the tick step needs."""
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return f"{value:.{decimals}f}"


class Canvas:
    """A white RGB image to draw charts on."""

    def __init__(self, width: int, height: int):
        from PIL import Image, ImageDraw

        self.image = Image.new("RGB", (int(width), int(height)), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.font = font()
        self.title_font = font(TITLE_SIZE)

    def text(self, xy, text: str, fill=TEXT, anchor: str = "la", title: bool = False) -> None:
        """Draw `text` at `xy` (Pillow anchor, e.g. "la" left-top, "mm" centre, "rm" right-middle)."""
        self.draw.text(xy, text, fill=fill, font=self.title_font if title else self.font, anchor=anchor)

    def text_width(self, text: str) -> float:
        """Width in pixels of `text` in the body font."""
        return self.draw.textlength(text, font=self.font)

    def save(self, path) -> Path:
        """Save as PNG at `path` (parent folders are created)."""
        return save_png(self.image, path)


def save_png(image, path) -> Path:
    """Save a Pillow image as PNG at `path`, creating parent folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


class Axes:
    """A plot area with a frame, grid, ticks, tick labels, axis labels and a title.

    Args:
        canvas: where to draw.
        box: (left, top, right, bottom) of the plot area in pixels (labels go outside it).
        x_range, y_range: data ranges mapped onto the box.
        title, x_label, y_label: text around the box (units belong in the labels).
        y_ticks: False for a y axis without ticks (e.g. category bars labelled by `category`).
        integer_y: y ticks at whole numbers only (counts).
    """

    def __init__(self, canvas: Canvas, box, x_range, y_range, title: str = "", x_label: str = "",
                 y_label: str = "", y_ticks: bool = True, integer_y: bool = False):
        self.canvas = canvas
        self.integer_y = integer_y
        self.left, self.top, self.right, self.bottom = box
        self.x_range = _widened(x_range)
        self.y_range = _widened(y_range)
        self._draw_grid_and_ticks(y_ticks)
        draw = canvas.draw
        draw.rectangle([self.left, self.top, self.right, self.bottom], outline=TEXT)
        if title:
            canvas.text((self.left, self.top - 8), title, anchor="ld", title=True)
        if x_label:
            canvas.text(((self.left + self.right) / 2, self.bottom + TICK + 22), x_label, anchor="mt")
        if y_label:
            self._vertical_label(y_label)

    def px(self, x: float) -> float:
        """Pixel column of data value x."""
        low, high = self.x_range
        return self.left + (x - low) / (high - low) * (self.right - self.left)

    def py(self, y: float) -> float:
        """Pixel row of data value y."""
        low, high = self.y_range
        return self.bottom - (y - low) / (high - low) * (self.bottom - self.top)

    def line(self, xs, ys, color, width: int = 2, markers: bool = True, dash: int = 0, offset: float = 0.0) -> None:
        """A polyline through the finite points (x, y), with a dot on each point.

        `dash` > 0 draws it dashed (dashes of that many pixels); `offset` shifts it that many pixels
        right and up, so that lines over the same points stay visible side by side.
        """
        points = [(self.px(x) + offset, self.py(y) - offset) for x, y in zip(xs, ys)
                  if math.isfinite(x) and math.isfinite(y)]
        if len(points) > 1:
            if dash:
                for start, end in zip(points, points[1:]):
                    self._dashed(start, end, color, width, dash)
            else:
                self.canvas.draw.line(points, fill=color, width=width)
        if markers:
            for x, y in points:
                self.canvas.draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)

    def _dashed(self, start, end, color, width: int, dash: int) -> None:
        length = math.dist(start, end)
        steps = max(1, int(length // dash))
        for step in range(0, steps, 2):
            a, b = step / steps, min(step + 1, steps) / steps
            self.canvas.draw.line([(start[0] + (end[0] - start[0]) * a, start[1] + (end[1] - start[1]) * a),
                                   (start[0] + (end[0] - start[0]) * b, start[1] + (end[1] - start[1]) * b)],
                                  fill=color, width=width)

    def vertical_marker(self, x: float, label: str, color=(120, 120, 120)) -> None:
        """A dashed vertical line at data x with a label at its top."""
        column = self.px(x)
        for row in range(int(self.top), int(self.bottom), 8):
            self.canvas.draw.line([(column, row), (column, min(row + 4, self.bottom))], fill=color)
        self.canvas.text((column + 4, self.top + 4), label, fill=color)

    def bar(self, x0: float, x1: float, y0: float, y1: float, color) -> None:
        """A filled rectangle spanning data [x0, x1] x [y0, y1]."""
        left, right = sorted((self.px(x0), self.px(x1)))
        top, bottom = sorted((self.py(y1), self.py(y0)))
        self.canvas.draw.rectangle([left, top, max(right, left + 1), max(bottom, top + 1)], fill=color)

    def category(self, y: float, label: str) -> None:
        """A label left of the plot area at data y (for horizontal bar charts)."""
        self.canvas.text((self.left - 8, self.py(y)), label, anchor="rm")

    def legend(self, entries, corner: str = "top-right") -> None:
        """A boxed legend of (label, colour) entries inside the plot area, in `corner`
        ("top-right", "top-left", "bottom-right" or "bottom-left")."""
        if not entries:
            return
        row = FONT_SIZE + 6
        width = max(self.canvas.text_width(label) for label, _ in entries) + 36
        height = legend_height(len(entries))
        x0 = self.left + 8 if corner.endswith("left") else self.right - width - 8
        y0 = self.top + 8 if corner.startswith("top") else self.bottom - height - 8
        self.canvas.draw.rectangle([x0, y0, x0 + width, y0 + height], fill="white", outline=(160, 160, 160))
        for index, (label, color) in enumerate(entries):
            y = y0 + 4 + index * row + row / 2
            self.canvas.draw.rectangle([x0 + 8, y - 5, x0 + 22, y + 5], fill=color)
            self.canvas.text((x0 + 28, y), label, anchor="lm")

    def _draw_grid_and_ticks(self, y_ticks: bool) -> None:
        draw = self.canvas.draw
        x_ticks = [t for t in nice_ticks(*self.x_range) if self.x_range[0] <= t <= self.x_range[1]]
        x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1.0
        for tick in x_ticks:
            column = self.px(tick)
            draw.line([(column, self.top), (column, self.bottom)], fill=GRID)
            draw.line([(column, self.bottom), (column, self.bottom + TICK)], fill=TEXT)
            self.canvas.text((column, self.bottom + TICK + 2), tick_label(tick, x_step), anchor="mt")
        if not y_ticks:
            return
        ticks = [t for t in nice_ticks(*self.y_range, integer=self.integer_y) if self.y_range[0] <= t <= self.y_range[1]]
        y_step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
        for tick in ticks:
            row = self.py(tick)
            draw.line([(self.left, row), (self.right, row)], fill=GRID)
            draw.line([(self.left - TICK, row), (self.left, row)], fill=TEXT)
            self.canvas.text((self.left - TICK - 3, row), tick_label(tick, y_step), anchor="rm")

    def _vertical_label(self, text: str) -> None:
        from PIL import Image, ImageDraw

        width = int(self.canvas.text_width(text)) + 4
        strip = Image.new("RGB", (width, FONT_SIZE + 6), "white")
        ImageDraw.Draw(strip).text((2, 2), text, fill=TEXT, font=self.canvas.font)
        rotated = strip.rotate(90, expand=True)
        x = max(int(self.left) - 58, 0)
        y = int((self.top + self.bottom) / 2 - rotated.height / 2)
        self.canvas.image.paste(rotated, (x, y))


def legend_height(entries: int) -> int:
    """Height in pixels of a legend of `entries` rows (to leave room for it in the data range)."""
    return (FONT_SIZE + 6) * entries + 8


def _widened(bounds) -> tuple[float, float]:
    low, high = (float(v) for v in bounds)
    return (low, high) if high > low else (low, low + 1.0)
