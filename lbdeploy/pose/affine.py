"""Crop geometry of stacked-hourglass pose pipelines, in numpy.

A person is described by a `center` (x, y) in image pixels and a `scale` such that the person's
box height is `200 * scale` pixels (the MPII convention of Newell et al.). The crop keeps the
aspect ratio of the model input: the source region is `200 * scale` pixels high and
`200 * scale * out_w / out_h` pixels wide, centred on `center`, and is resized to (out_w, out_h).

Coordinates are pixel indices (pixel (0, 0) has its centre at (0, 0)), the convention in which
heatmap targets are drawn (`heatmap_xy = input_xy / stride`). Matrices are 2x3 and map column
vectors [x, y, 1]; `crop_matrix` maps image -> crop and `invert_affine` gives crop -> image.

To add rotation or another crop policy, build another 2x3 matrix here; the warp and the keypoint
mapping only consume matrices.
"""

from __future__ import annotations

import numpy as np

from lbdeploy.errors import InputError

PIXELS_PER_SCALE = 200.0
# Top-down person boxes are enlarged by this factor so that limbs at the box edge stay in the crop.
BOX_PADDING = 1.25


def box_to_center_scale(box, aspect_ratio: float, padding: float = BOX_PADDING) -> tuple[np.ndarray, float]:
    """Center and scale of a person box, widened or heightened to the model's aspect ratio.

    Args:
        box: (x, y, w, h) in image pixels, (x, y) the top-left corner.
        aspect_ratio: model input width / height.
        padding: factor applied to the adjusted box (1.0 keeps the box as it is).

    Returns:
        (center [2] float64, scale) with `200 * scale` the padded box height in pixels.

    Raises:
        InputError: a box with a non-positive or non-finite size.
    """
    x, y, w, h = (float(v) for v in box)
    if not all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
        raise InputError(f"box {tuple(box)} must be (x, y, w, h) with finite values and w, h > 0")
    center = np.array([x + w / 2.0, y + h / 2.0])
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    return center, h * padding / PIXELS_PER_SCALE


def image_center_scale(width: int, height: int, aspect_ratio: float) -> tuple[np.ndarray, float]:
    """Center and scale that cover the whole image (no padding), aspect ratio kept."""
    return box_to_center_scale((0, 0, width, height), aspect_ratio, padding=1.0)


def crop_matrix(center, scale: float, out_size: tuple[int, int]) -> np.ndarray:
    """2x3 matrix mapping image pixels into the (out_w, out_h) crop of `center`/`scale`.

    Raises:
        InputError: a non-positive scale.
    """
    if not scale > 0:
        raise InputError(f"scale must be > 0, got {scale}")
    out_w, out_h = out_size
    zoom = out_h / (PIXELS_PER_SCALE * scale)
    cx, cy = float(center[0]), float(center[1])
    return np.array([[zoom, 0.0, out_w / 2.0 - zoom * cx],
                     [0.0, zoom, out_h / 2.0 - zoom * cy]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix (as a 2x3 matrix)."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map points [..., 2] through a 2x3 matrix; returns float64 points of the same shape."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]
