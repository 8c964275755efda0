"""What one request may ask of the pose runtime: safe parsing of person boxes and per-request caps.

Boxes arrive as text (the server's `boxes` JSON, the CLI's `--box x,y,w,h`). `parse_boxes_json`
reads JSON with hooks so that non-finite numbers (`NaN`, `Infinity`, `1e400`), integers hundreds
of digits long and deeply nested arrays are refused with `InputError` (HTTP 400, CLI exit 2)
instead of overflowing later; `check_box` keeps every coordinate in a range where the crop
geometry stays finite. `check_work` caps the work of one request (the number of boxes and the
crop pixels they ask for, doubled by the flip test) with `LimitExceeded` (HTTP 413).

To add a cap: a field on `RequestLimits` and a check in `check_work`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from lbdeploy.errors import InputError

# Box coordinates are pixels: |x|, |y|, w and h above this cannot describe a person in an image
# the runtime accepts (at most 40 M pixels by default), and keep the crop matrices finite.
MAX_COORDINATE = 1e6
# A person box narrower or lower than one pixel cannot hold a person (and would zoom the crop
# matrix towards overflow).
MIN_BOX_SIDE = 1.0


class LimitExceeded(InputError):
    """A request asks for more work than the server's per-request caps allow (HTTP 413)."""

    http_status = 413


@dataclass
class RequestLimits:
    """Per-request caps of the pose server.

    Attributes:
        max_boxes: most person boxes in one request.
        max_crop_pixels: most model-input pixels one request may ask for: boxes x input width x
            input height, doubled with the flip test.
        batch_crops: crops per backend call; a request runs in batches of this many crops, so
            memory per running request does not grow with its box count.
    """

    max_boxes: int = 256
    max_crop_pixels: int = 512 * 256 * 256
    batch_crops: int = 16


def check_box(values) -> tuple[float, float, float, float]:
    """A person box (x, y, w, h) as floats, or InputError.

    Args:
        values: four numbers.

    Returns:
        (x, y, w, h) as floats.

    Raises:
        InputError: not four real numbers, a non-finite value, |x| or |y| above MAX_COORDINATE,
            or w, h outside [MIN_BOX_SIDE, MAX_COORDINATE].
    """
    if len(values) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise InputError(f"a box is four numbers x, y, w, h; got {values!r}")
    x, y, w, h = (float(v) for v in values)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise InputError(f"box {[x, y, w, h]} has a non-finite value; send pixel coordinates")
    if abs(x) > MAX_COORDINATE or abs(y) > MAX_COORDINATE:
        raise InputError(f"box {[x, y, w, h]}: x and y must be within +-{MAX_COORDINATE:g} pixels")
    if not (MIN_BOX_SIDE <= w <= MAX_COORDINATE and MIN_BOX_SIDE <= h <= MAX_COORDINATE):
        raise InputError(f"box {[x, y, w, h]}: w and h must be between {MIN_BOX_SIDE:g} and "
                         f"{MAX_COORDINATE:g} pixels")
    return x, y, w, h


def _refuse_constant(name: str):
    raise InputError(f"boxes contain {name}; send finite pixel coordinates")


def parse_boxes_json(text: str | None) -> list[tuple[float, float, float, float]] | None:
    """Person boxes from JSON text `[[x, y, w, h], ...]` (or one flat `[x, y, w, h]`).

    Numbers are read as floats (an integer literal of any length becomes a float, `inf` when
    huge, and is then refused), `NaN`/`Infinity` literals and nesting too deep for the parser
    are refused.

    Args:
        text: the JSON text; None or "" means no boxes.

    Returns:
        A list of checked boxes, or None when no boxes were given.

    Raises:
        InputError: text that is not such JSON, or a box that `check_box` refuses.
    """
    if text is None or text == "":
        return None
    try:
        boxes = json.loads(text, parse_int=float, parse_float=float, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, RecursionError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise InputError(f"boxes must be JSON like [[x, y, w, h], ...] ({reason})") from None
    if isinstance(boxes, list) and len(boxes) == 4 and not any(isinstance(v, list) for v in boxes):
        boxes = [boxes]
    if not isinstance(boxes, list) or not all(isinstance(box, list) for box in boxes):
        raise InputError("boxes must be JSON like [[x, y, w, h], ...] with numbers")
    return [check_box(box) for box in boxes]


def check_work(people: int, flip: bool, input_size: tuple[int, int], limits: RequestLimits) -> None:
    """Refuse a request whose boxes ask for more work than the caps allow.

    Args:
        people: number of person crops asked for (1 when no box was given).
        flip: whether the flip test doubles the crops.
        input_size: model input (width, height).
        limits: the caps.

    Raises:
        LimitExceeded: more boxes than `max_boxes`, or more crop pixels than `max_crop_pixels`.
    """
    if people > limits.max_boxes:
        raise LimitExceeded(f"{people} boxes is above the limit of {limits.max_boxes} per request; "
                            "split them over several requests")
    crops = people * (2 if flip else 1)
    pixels = crops * input_size[0] * input_size[1]
    if pixels > limits.max_crop_pixels:
        raise LimitExceeded(
            f"{people} boxes{' with flip' if flip else ''} ask for {pixels} crop pixels ({crops} crops of "
            f"{input_size[0]}x{input_size[1]}), above the limit of {limits.max_crop_pixels}; "
            "send fewer boxes per request" + (" or drop flip" if flip else ""))
