"""Training losses: the heatmap loss of pose (MSE against Gaussian targets, summed over the stacks,
intermediate supervision) and the saliency loss of CPD (BCE on both decoder outputs).

Each stack's heatmaps are compared with the same targets; joints with weight 0 (not annotated or
outside the crop) contribute nothing. To weight the stacks differently, change `heatmap_loss`.
"""

from __future__ import annotations

import torch


def heatmap_loss(outputs, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum over stacks of the weighted mean squared error.

    Args:
        outputs: list of [N, J, H, W] heatmaps, one per stack (a single tensor is one stack).
        targets: [N, J, H, W] Gaussian targets.
        weights: [N, J] per-joint weights (0 or 1).
    Returns:
        Scalar loss tensor.
    """
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    mask = weights[:, :, None, None]
    return sum(((out - targets) ** 2 * mask).mean() for out in outputs)


def saliency_loss(outputs, masks: torch.Tensor) -> torch.Tensor:
    """CPD's loss: binary cross-entropy (on logits) of every output map, summed (attention + detection).

    Args:
        outputs: list of [N, 1, H, W] logit maps (a single tensor is one map).
        masks: [N, 1, H, W] ground truth, 0 or 1.
    Returns:
        Scalar loss tensor.
    """
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return sum(torch.nn.functional.binary_cross_entropy_with_logits(out, masks) for out in outputs)
