"""The saliency task: logit maps at the input size (side maps, then the final `saliency`).

The final logit map [N, 1, H, W] becomes probabilities through the manifest's output activation
(ACTIVATIONS; the sigmoid). Agreement rules, all on probabilities: a pixel agrees when it lies on
the same side of 0.5 as the reference's, or the reference is within the rule's tie of 0.5.

Parity's probability tolerance is derived from the gate's logit tolerance: the sigmoid's slope is
at most 1/4, so a logit within tolerance t gives a probability within t/4 (SIGMOID_MAX_SLOPE * t),
and the logit and probability checks never disagree. The int8 accuracy gate counts ties within
SALIENCY_PROB_ATOL of 0.5 (maps are shown and thresholded as 8-bit images: a quarter of one level
changes no pixel of the PNG by more than one level).
"""

from __future__ import annotations

import numpy as np

from lbdeploy.tasks.base import Agreement, Task

SALIENCY_PROB_ATOL = 1e-3
# |sigmoid(a) - sigmoid(b)| <= |a - b| / 4: a pixel's parity probability tolerance is its logit tolerance / 4.
SIGMOID_MAX_SLOPE = 0.25
PRECISION_TIE = 1e-2  # fp16 rounding of a probability near 0.5


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in float64 without overflow for any logit (an untrained model's can be ~1e9)."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(logits, dtype=np.float64)))


ACTIVATIONS = {"sigmoid": sigmoid}


def same_side(ref_logits: np.ndarray, out_logits: np.ndarray, tie: float) -> tuple[np.ndarray, np.ndarray]:
    """(per-pixel agreement after the sigmoid, ties within `tie` of 0.5 agreeing; |probability difference|)."""
    ref, out = sigmoid(ref_logits), sigmoid(out_logits)
    agree = ((ref >= 0.5) == (out >= 0.5)) | (np.abs(ref - 0.5) <= tie)
    return agree, np.abs(out - ref)


def saliency_agreement(ref_logits: np.ndarray, out_logits: np.ndarray,
                       logit_tolerance: np.ndarray) -> tuple[float, float, float]:
    """Per-pixel parity agreement of two final logit maps [N, 1, H, W] after the sigmoid.

    Args:
        ref_logits: PyTorch's final map; out_logits: the exported model's, same shape.
        logit_tolerance: the gate's logit tolerance, broadcastable to the maps.
    Returns:
        (fraction of pixels on the same side of 0.5 as the reference, ties within the probability
        tolerance SIGMOID_MAX_SLOPE * logit_tolerance of 0.5 agreeing; max |probability
        difference|; max of that difference over the probability tolerance).
    """
    ref, out = sigmoid(ref_logits), sigmoid(out_logits)
    prob_tolerance = np.broadcast_to(SIGMOID_MAX_SLOPE * np.asarray(logit_tolerance, np.float64), ref.shape)
    error = np.abs(out - ref)
    agree = ((ref >= 0.5) == (out >= 0.5)) | (np.abs(ref - 0.5) <= prob_tolerance)
    worst = float(np.nan_to_num(error / prob_tolerance, nan=np.inf).max())
    return float(agree.mean()), float(error.max()), worst


class SaliencyTask(Task):
    """Salient object detection (CPD): `saliency_<i>` side maps and the final `saliency` logit map."""

    name = "saliency"
    section = "saliency"
    unit = "pixels"

    def output_names(self, count: int) -> list[str]:
        """saliency_0 .. saliency_{count-2}, then the final `saliency`."""
        return [f"saliency_{i}" for i in range(count - 1)] + ["saliency"]

    def output_shapes(self, metadata: dict, input_size, count: int) -> list[tuple]:
        """Logit maps [1, 1, H, W] at the input size."""
        return [(1, 1, *input_size)] * count

    def manifest_section(self, metadata: dict, input_size, output_shapes: list) -> dict:
        """The output activation and the final map's size."""
        return {"output_activation": str(metadata.get("output_activation", "sigmoid")),
                "map_size": [int(d) for d in output_shapes[-1][2:]]}

    def parity(self, reference, output, tolerance) -> Agreement:
        """Every pixel on PyTorch's side of 0.5 and within its probability tolerance (logit tolerance / 4)."""
        agreement, error, worst = saliency_agreement(reference, output, tolerance)
        return Agreement(agreement == 1.0 and worst <= 1.0,
                         {"saliency_agreement": agreement, "saliency_max_prob_error": error,
                          "saliency_prob_worst_ratio": worst},
                         [f"saliency pixels on the same side of 0.5: {agreement:.2%}, max |prob err| {error:.2e}, "
                          f"worst prob err/tol {worst:.2e} (tol = logit tol / 4)"])

    def accuracy(self, reference, output) -> Agreement:
        """Share of pixels on PyTorch fp32's side of 0.5 (ties within SALIENCY_PROB_ATOL)."""
        agree, error = same_side(reference, output, SALIENCY_PROB_ATOL)
        return Agreement(True, {"agreement": float(agree.mean())},
                         [f"pixels on the same side of 0.5 as PyTorch fp32: {agree.mean():.2%} "
                          f"(max |prob err| {error.max():.2e})"])

    def precision(self, reference, candidate) -> Agreement:
        """Every pixel on float32's side of 0.5, or within PRECISION_TIE of 0.5."""
        agree, error = same_side(reference, candidate, PRECISION_TIE)
        return Agreement(bool(agree.all()), {"agreeing": int(agree.sum()), "total": int(agree.size),
                                             "worst_keypoint_shift": None},
                         [f"max |prob err| {error.max():.2e}"])
