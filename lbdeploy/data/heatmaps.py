"""Gaussian heatmap targets for heatmap-regression pose networks (numpy).

A joint at heatmap coordinates (x, y) (= model-input pixels / stride, the convention of
lbdeploy.pose.affine and lbdeploy.pose.decode) becomes exp(-d^2 / (2 sigma^2)) around its exact
sub-pixel position, cut to zero beyond 3 sigma. Newell et al. use sigma = 1 on 64x64 heatmaps;
`sigma_for` scales that with the heatmap height (32x32 maps get sigma 0.5), so the target
covers the same fraction of the person at every input size. A joint that is not annotated or
lies outside the map gets an all-zero map and weight 0, so the loss ignores it.

To try another target (e.g. a different kernel), add a function with the same
(joints, visible, size, sigma) -> (maps, weights) contract.
"""

from __future__ import annotations

import numpy as np

REFERENCE_HEATMAP = 64
REFERENCE_SIGMA = 1.0
CUTOFF_SIGMAS = 3.0


def sigma_for(heatmap_height: int) -> float:
    """Gaussian sigma for a heatmap of this height: 1 pixel at 64, scaled proportionally."""
    return REFERENCE_SIGMA * heatmap_height / REFERENCE_HEATMAP


def gaussian_heatmaps(joints: np.ndarray, visible: np.ndarray, size: tuple[int, int], sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Target heatmaps and per-joint loss weights.

    Args:
        joints: [J, 2] (x, y) in heatmap pixels.
        visible: [J] bool, annotated joints.
        size: (width, height) of the heatmaps.
        sigma: Gaussian standard deviation in heatmap pixels.
    Returns:
        (maps [J, H, W] float32 in [0, 1], weights [J] float32: 1 for annotated joints inside the map).
    """
    width, height = size
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    maps = np.zeros((len(joints), height, width), dtype=np.float32)
    weights = np.zeros(len(joints), dtype=np.float32)
    for j, ((x, y), seen) in enumerate(zip(np.asarray(joints, dtype=np.float64), visible)):
        if not seen or not (0 <= x <= width - 1 and 0 <= y <= height - 1):
            continue
        gx = (xs - x) ** 2
        gy = (ys - y) ** 2
        d2 = gy[:, None] + gx[None, :]
        kernel = np.exp(-d2 / (2.0 * sigma * sigma))
        kernel[d2 > (CUTOFF_SIGMAS * sigma) ** 2] = 0.0
        maps[j] = kernel
        weights[j] = 1.0
    return maps, weights
