"""The int8 accuracy gate: the counterpart of the parity gate (exporters.parity) for quantized models.

An int8 model cannot match PyTorch to float tolerances, so the gate checks what a user sees: on
images held out from calibration (exporters.calibration), the argmax keypoint of every joint of
the final heatmaps must lie within JOINT_TOLERANCE_PX heatmap pixels (Chebyshev distance: a
neighbouring pixel, diagonals included) of PyTorch fp32's on at least MIN_AGREEMENT of the joints
(classification: identical top-1 on MIN_AGREEMENT of the images). Beyond that the export fails
(AccuracyError) unless the user passes --no-verify.

Like the parity gate's numerical ties, a joint whose int8 keypoint lands elsewhere counts as
agreeing when PyTorch's own heatmap there is within TIE_FRACTION of its peak, measured on the
heatmap's range (peak - minimum, so a flat heatmap does not make every pixel a tie): the fp32 model
itself has two near-equal answers (two modes of a multi-modal heatmap) and int8 noise picks the
other one. The report keeps the strict figure (`agreement_strict`, no ties) beside the gated one,
the mean absolute heatmap error of every output and the largest joint offset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from lbdeploy.exporters.parity import torch_outputs

MIN_AGREEMENT = 0.97
JOINT_TOLERANCE_PX = 1
TIE_FRACTION = 0.05  # of the fp32 heatmap's range: a second mode this close is a tie, not an int8 error
BATCH = 8


@dataclass
class AccuracyReport:
    """Result of the int8 accuracy gate."""

    backend: str
    images: int
    joints: int = 0
    agreement: float = 0.0  # fraction of joints (pose) or images (classification) that agree
    agreement_strict: float | None = None  # pose: within JOINT_TOLERANCE_PX, near-ties not counted
    max_offset_px: int | None = None  # largest keypoint offset in heatmap pixels (pose)
    output_mean_abs_error: dict = field(default_factory=dict)
    passed: bool = False

    def to_dict(self) -> dict:
        """JSON-friendly form stored in manifest.json under "accuracy"."""
        return {**asdict(self), "min_agreement": MIN_AGREEMENT, "tolerance_px": JOINT_TOLERANCE_PX,
                "tie_fraction": TIE_FRACTION}

    def summary(self) -> str:
        """Lines for the export's printed report."""
        what = (f"joints within {JOINT_TOLERANCE_PX} heatmap pixel of PyTorch fp32 or at a near-tie: "
                f"{self.agreement:.1%} of {self.joints} (strict {self.agreement_strict:.1%}, max offset "
                f"{self.max_offset_px} px)") if self.joints else \
            f"identical top-1 classes: {self.agreement:.1%}"
        lines = [f"  {what} on {self.images} held-out images; gate >= {MIN_AGREEMENT:.0%}"
                 f"{'' if self.passed else '  FAIL'}"]
        lines += [f"  {name}: mean |err| {err:.2e}" for name, err in self.output_mean_abs_error.items()]
        return "\n".join(lines)


def keypoint_offsets(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Chebyshev distance in heatmap pixels between the argmax of each joint, [N, J] ints."""
    n, j, _, width = reference.shape
    ref = reference.reshape(n, j, -1).argmax(-1)
    out = output.reshape(n, j, -1).argmax(-1)
    return np.maximum(np.abs(ref // width - out // width), np.abs(ref % width - out % width))


def near_ties(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """[N, J] bool: PyTorch's heatmap at the int8 argmax is within TIE_FRACTION of its own peak, as a
    fraction of the heatmap's range (peak - minimum)."""
    n, j = reference.shape[:2]
    ref = reference.reshape(n, j, -1)
    at_output = np.take_along_axis(ref, output.reshape(n, j, -1).argmax(-1)[..., None], -1)[..., 0]
    peak = ref.max(-1)
    return peak - at_output <= TIE_FRACTION * (peak - ref.min(-1))


def check_accuracy(model, run, names: list[str], task: str, images: np.ndarray, backend: str) -> AccuracyReport:
    """Run the gate on `images` (held-out model inputs).

    Args:
        model: the original PyTorch model (fp32).
        run: callable taking a batch of images -> {output_name: array} (the int8 model).
        names: output names in order, last = final; task: "pose" or "classification".
        backend: what `run` executes, for the report.
    Returns:
        The report; the caller decides whether a failure is fatal.
    """
    reference, outputs = {name: [] for name in names}, {name: [] for name in names}
    for start in range(0, len(images), BATCH):
        batch = images[start:start + BATCH]
        ref, out = torch_outputs(model, batch, names), run(batch)
        for name in names:
            reference[name].append(ref[name])
            outputs[name].append(np.asarray(out[name], dtype=np.float64))
    reference = {name: np.concatenate(v) for name, v in reference.items()}
    outputs = {name: np.concatenate(v) for name, v in outputs.items()}
    return compare_outputs(reference, outputs, task, backend)


def compare_outputs(reference: dict, outputs: dict, task: str, backend: str) -> AccuracyReport:
    """The gate's rule on outputs already computed: {name: array} of PyTorch fp32 and of the int8
    model on the same images, in output order (last = final)."""
    names = list(reference)
    report = AccuracyReport(backend=backend, images=len(reference[names[-1]]), output_mean_abs_error={
        name: float(np.abs(np.asarray(outputs[name], np.float64) - reference[name]).mean()) for name in names})
    final = names[-1]
    if task == "pose":
        offsets = keypoint_offsets(reference[final], outputs[final])
        close = offsets <= JOINT_TOLERANCE_PX
        report.joints = int(offsets.size)
        report.agreement_strict = float(close.mean())
        report.agreement = float((close | near_ties(reference[final], outputs[final])).mean())
        report.max_offset_px = int(offsets.max())
    else:
        report.agreement = float((reference[final].argmax(1) == outputs[final].argmax(1)).mean())
    report.passed = report.agreement >= MIN_AGREEMENT
    return report
