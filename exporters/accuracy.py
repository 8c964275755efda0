"""The int8 accuracy gate: the counterpart of the parity gate (exporters.parity) for quantized models.

An int8 model cannot match PyTorch to float tolerances, so the gate checks what a user sees: on
images held out from calibration (exporters.calibration), the final output must agree with
PyTorch fp32's by its task's int8 rule (lbdeploy.tasks: pose, a joint's argmax within one heatmap
pixel or at a near-tie of a multi-modal heatmap; classification, the top-1 class; saliency, a
pixel's side of 0.5) on at least MIN_AGREEMENT of them. Beyond that the export fails
(AccuracyError) unless the user passes --no-verify. The report keeps the task's figures (for pose
the strict share without ties and the largest joint offset) and the mean absolute error of every
output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from lbdeploy.exporters.parity import torch_outputs
from lbdeploy.tasks import get_task
from lbdeploy.tasks.pose import JOINT_TOLERANCE_PX, TIE_FRACTION

MIN_AGREEMENT = 0.97
BATCH = 8


@dataclass
class AccuracyReport:
    """Result of the int8 accuracy gate."""

    backend: str
    images: int
    joints: int = 0
    agreement: float = 0.0  # fraction of joints (pose), images (classification) or pixels (saliency) that agree
    agreement_strict: float | None = None  # pose: within JOINT_TOLERANCE_PX, near-ties not counted
    max_offset_px: int | None = None  # largest keypoint offset in heatmap pixels (pose)
    output_mean_abs_error: dict = field(default_factory=dict)
    passed: bool = False
    agreement_lines: list = field(default_factory=list)  # the task's rule in words (not stored)

    def to_dict(self) -> dict:
        """JSON-friendly form stored in manifest.json under "accuracy"."""
        stored = {key: value for key, value in asdict(self).items() if key != "agreement_lines"}
        return {**stored, "min_agreement": MIN_AGREEMENT, "tolerance_px": JOINT_TOLERANCE_PX,
                "tie_fraction": TIE_FRACTION}

    def summary(self) -> str:
        """Lines for the export's printed report."""
        what = "; ".join(self.agreement_lines)
        lines = [f"  {what} on {self.images} held-out images; gate >= {MIN_AGREEMENT:.0%}"
                 f"{'' if self.passed else '  FAIL'}"]
        lines += [f"  {name}: mean |err| {err:.2e}" for name, err in self.output_mean_abs_error.items()]
        return "\n".join(lines)


def check_accuracy(model, run, names: list[str], task: str, images: np.ndarray, backend: str) -> AccuracyReport:
    """Run the gate on `images` (held-out model inputs).

    Args:
        model: the original PyTorch model (fp32).
        run: callable taking a batch of images -> {output_name: array} (the int8 model).
        names: output names in order, last = final; task: a name of lbdeploy.tasks.
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
    agreement = get_task(task).accuracy(reference[final], outputs[final])
    for key, value in agreement.fields.items():
        setattr(report, key, value)
    report.agreement_lines = agreement.lines
    report.passed = report.agreement >= MIN_AGREEMENT
    return report
