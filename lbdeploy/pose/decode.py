"""Heatmaps -> keypoints, and the flip test, in numpy.

`decode_heatmaps` takes each joint's argmax, moves it a quarter pixel toward the higher of its two
neighbours on each axis (Newell et al.'s sub-pixel refinement; no shift on a border or a tie) and
reports the peak value as the joint's confidence. A joint whose heatmap holds a non-finite value
(NaN, +-inf: a diverged network or a NaN input) is "not found": score 0 at the map's first pixel,
so decoded keypoints and scores are always finite. Coordinates are heatmap pixel indices; multiply
by the heatmap stride for model-input pixels (`heatmap_to_input`), then map through the inverse
crop matrix (`lbdeploy.pose.affine`) for original-image pixels.

The flip test runs the mirrored crop too, mirrors its heatmaps back, swaps left/right joints and
averages (`flip_back`, `average_flip`). To add another decoder (e.g. integral regression), add a
function with the same (heatmaps) -> (coords, scores) contract.
"""

from __future__ import annotations

import numpy as np

from lbdeploy.errors import InputError

QUARTER_PIXEL = 0.25


def _check_heatmaps(heatmaps: np.ndarray) -> np.ndarray:
    maps = np.asarray(heatmaps)
    if maps.ndim != 4 or 0 in maps.shape:
        raise InputError(f"heatmaps must be a non-empty [N, J, H, W] array, got shape {maps.shape}")
    return maps.astype(np.float32, copy=False)


def decode_heatmaps(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint argmax with the quarter-pixel shift toward the higher neighbour.

    Args:
        heatmaps: [N, J, H, W] float array.

    Returns:
        (coords [N, J, 2] float32 as (x, y) heatmap pixel indices, scores [N, J] float32 peak values).
        A flat map decodes to its first pixel; a score <= 0 means the joint was not found. A map
        with any non-finite value decodes like an all-zero map (first pixel, score 0): never NaN.

    Raises:
        InputError: heatmaps that are not a non-empty 4-D array.
    """
    maps = _check_heatmaps(heatmaps)
    finite = np.isfinite(maps).all(axis=(2, 3))
    if not finite.all():
        maps = np.where(finite[..., None, None], maps, np.float32(0.0))
    n, j, h, w = maps.shape
    flat = maps.reshape(n, j, h * w)
    index = flat.argmax(axis=2)
    scores = np.take_along_axis(flat, index[..., None], axis=2)[..., 0]
    ys, xs = np.divmod(index, w)
    coords = np.stack([xs, ys], axis=-1).astype(np.float32)

    batch, joint = np.meshgrid(np.arange(n), np.arange(j), indexing="ij")
    inner_x = (xs > 0) & (xs < w - 1)
    right = maps[batch, joint, ys, np.minimum(xs + 1, w - 1)]
    left = maps[batch, joint, ys, np.maximum(xs - 1, 0)]
    coords[..., 0] += np.where(inner_x, QUARTER_PIXEL * np.sign(right - left), 0.0)
    inner_y = (ys > 0) & (ys < h - 1)
    below = maps[batch, joint, np.minimum(ys + 1, h - 1), xs]
    above = maps[batch, joint, np.maximum(ys - 1, 0), xs]
    coords[..., 1] += np.where(inner_y, QUARTER_PIXEL * np.sign(below - above), 0.0)
    return coords, scores.astype(np.float32)


def heatmap_to_input(coords: np.ndarray, stride: int) -> np.ndarray:
    """Heatmap pixel indices -> model-input pixel indices (`heatmap_xy * stride`)."""
    return np.asarray(coords, dtype=np.float32) * float(stride)


def swap_joints(heatmaps: np.ndarray, flip_pairs) -> np.ndarray:
    """Copy of [N, J, ...] with the channels of each (left, right) pair exchanged."""
    order = np.arange(heatmaps.shape[1])
    for a, b in flip_pairs:
        order[a], order[b] = b, a
    return heatmaps[:, order]


def flip_back(flipped: np.ndarray, flip_pairs, stride: int) -> np.ndarray:
    """Heatmaps of a horizontally mirrored crop, brought back into the unmirrored frame.

    Mirroring the crop maps input x to `W_in - 1 - x`; mirroring its heatmaps maps heatmap x to
    `W_hm - 1 - x`. With heatmap_x = input_x / stride the two differ by (stride - 1) / stride
    heatmap pixels, so the mirrored maps are shifted right by that amount (linear interpolation,
    the first column repeated) after the left/right joints are swapped.

    Args:
        flipped: [N, J, H, W] heatmaps predicted for the mirrored crops.
        flip_pairs: (left, right) joint index pairs.
        stride: model input pixels per heatmap pixel.

    Returns:
        [N, J, H, W] float32 heatmaps aligned with the original crops.
    """
    maps = swap_joints(_check_heatmaps(flipped)[..., ::-1], flip_pairs)
    shift = (stride - 1) / float(stride)
    previous = np.concatenate([maps[..., :1], maps[..., :-1]], axis=-1)
    return ((1.0 - shift) * maps + shift * previous).astype(np.float32)


def average_flip(heatmaps: np.ndarray, flipped: np.ndarray, flip_pairs, stride: int) -> np.ndarray:
    """Mean of the heatmaps and the flipped-back heatmaps of the mirrored crops (the flip test)."""
    return 0.5 * (_check_heatmaps(heatmaps) + flip_back(flipped, flip_pairs, stride))
