"""The parity gate: the exported model must compute what PyTorch eager computes.

Every export runs the exported model on fixed seeded inputs beside the original (unfolded)
PyTorch model and records, per output, the max and mean absolute error and the tolerance used,
plus the fraction of joints whose argmax keypoint is identical (pose) or of identical top-1
classes (classification). Beyond tolerance the export fails (ParityError) unless the user
passes --no-verify. Tolerances (docs/export.md):

- RTOL: an output passes when max|onnx - torch| <= ATOL + RTOL * max|torch|. BN folding and
  float32 sums in another order change results by ~1e-6 relative per layer; 1e-3 leaves room for
  hundreds of layers (8-stack LBRN-S) while any wrong weight, layout or fusion errs by > 1e-2.
- Keypoints: every joint's argmax must agree, where a different argmax counts as agreeing only if
  the torch heatmap value there is within the output's tolerance of its peak (a numerical tie).
- Saliency (`saliency_agreement`): after the sigmoid, every pixel's probability must lie within
  SALIENCY_PROB_ATOL of PyTorch's and on the same side of 0.5, where a pixel whose torch
  probability is within SALIENCY_PROB_ATOL of 0.5 is a tie and may fall on either side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from lbdeploy.errors import ParityError
from runtime.saliency import sigmoid

RTOL = 1e-3
ATOL = 1e-5
PARITY_BATCH = 2
PARITY_SEED = 20210101
# Saliency maps are shown and thresholded as 8-bit images: an error of a quarter of one level
# (1/255) changes no pixel of the PNG by more than one level, while a wrong layer moves many
# pixels' probabilities by far more than that.
SALIENCY_PROB_ATOL = 1e-3


@dataclass
class OutputParity:
    """Error of one output."""

    name: str
    max_abs_error: float
    mean_abs_error: float
    reference_max_abs: float
    tolerance: float
    passed: bool


@dataclass
class ParityReport:
    """Result of the parity gate."""

    backend: str
    inputs: dict
    outputs: list = field(default_factory=list)
    keypoint_agreement: float | None = None
    keypoint_agreement_strict: float | None = None
    top1_agreement: float | None = None
    saliency_agreement: float | None = None
    saliency_max_prob_error: float | None = None
    passed: bool = False

    def to_dict(self) -> dict:
        """JSON-friendly form stored in manifest.json."""
        return {**asdict(self), "tolerances": {"rtol": RTOL, "atol": ATOL}}

    def summary(self) -> str:
        """One line per output plus the agreement figures."""
        lines = [f"  {o.name}: max |err| {o.max_abs_error:.2e} (tol {o.tolerance:.2e}), mean {o.mean_abs_error:.2e}"
                 f"{'' if o.passed else '  FAIL'}" for o in self.outputs]
        if self.keypoint_agreement is not None:
            lines.append(f"  joints with identical argmax: {self.keypoint_agreement:.1%} "
                         f"(strict {self.keypoint_agreement_strict:.1%})")
        if self.top1_agreement is not None:
            lines.append(f"  identical top-1 classes: {self.top1_agreement:.1%}")
        if self.saliency_agreement is not None:
            lines.append(f"  saliency pixels on the same side of 0.5: {self.saliency_agreement:.2%}, max |prob err| "
                         f"{self.saliency_max_prob_error:.2e} (tol {SALIENCY_PROB_ATOL:.0e})")
        return "\n".join(lines)


def parity_inputs(input_size, mean, std, batch: int = PARITY_BATCH, seed: int = PARITY_SEED) -> np.ndarray:
    """Fixed seeded images (uniform pixels, normalized as the manifest says), NCHW float32."""
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(0.0, 1.0, (batch, 3, *input_size))
    mean = np.asarray(mean).reshape(1, 3, 1, 1)
    std = np.asarray(std).reshape(1, 3, 1, 1)
    return ((pixels - mean) / std).astype(np.float32)


def _keypoint_agreement(ref: np.ndarray, out: np.ndarray, tolerance: float) -> tuple[float, float]:
    n, j = ref.shape[:2]
    ref_flat, out_flat = ref.reshape(n * j, -1), out.reshape(n * j, -1)
    ref_arg, out_arg = ref_flat.argmax(1), out_flat.argmax(1)
    strict = ref_arg == out_arg
    rows = np.arange(n * j)
    tie = ref_flat[rows, ref_arg] - ref_flat[rows, out_arg] <= tolerance
    return float((strict | tie).mean()), float(strict.mean())


def saliency_agreement(ref_logits: np.ndarray, out_logits: np.ndarray) -> tuple[float, float]:
    """Per-pixel agreement of two saliency logit maps after the sigmoid.

    Args:
        ref_logits: PyTorch's final map [N, 1, H, W]; out_logits: the exported model's, same shape.
    Returns:
        (fraction of pixels on the same side of 0.5 as PyTorch, ties within SALIENCY_PROB_ATOL of
        0.5 counting as agreeing; max |probability difference|).
    """
    ref, out = sigmoid(ref_logits), sigmoid(out_logits)
    same_side = (ref >= 0.5) == (out >= 0.5)
    tie = np.abs(ref - 0.5) <= SALIENCY_PROB_ATOL
    return float((same_side | tie).mean()), float(np.abs(out - ref).max())


def compare(reference: dict, outputs: dict, task: str, backend: str, inputs_info: dict) -> ParityReport:
    """Compare named outputs against the PyTorch reference and build the report."""
    report = ParityReport(backend=backend, inputs=inputs_info)
    for name, ref in reference.items():
        if name not in outputs:
            raise ParityError(f"the exported model has no output {name!r}")
        out = outputs[name]
        if out.shape != ref.shape:
            raise ParityError(f"output {name!r} has shape {out.shape}, PyTorch gives {ref.shape}")
        err = np.abs(out.astype(np.float64) - ref)
        ref_max = float(np.abs(ref).max())
        tol = ATOL + RTOL * ref_max
        report.outputs.append(OutputParity(name, float(err.max()), float(err.mean()), ref_max, tol,
                                           bool(err.max() <= tol)))
    final_name = list(reference)[-1]
    final_tol = report.outputs[-1].tolerance
    if task == "pose":
        report.keypoint_agreement, report.keypoint_agreement_strict = _keypoint_agreement(
            reference[final_name], outputs[final_name], final_tol)
        agreement_ok = report.keypoint_agreement == 1.0
    elif task == "saliency":
        report.saliency_agreement, report.saliency_max_prob_error = saliency_agreement(
            reference[final_name], outputs[final_name])
        agreement_ok = report.saliency_agreement == 1.0 and report.saliency_max_prob_error <= SALIENCY_PROB_ATOL
    else:
        report.top1_agreement = float((reference[final_name].argmax(1) == outputs[final_name].argmax(1)).mean())
        agreement_ok = report.top1_agreement == 1.0
    report.passed = all(o.passed for o in report.outputs) and agreement_ok
    return report


def torch_reference(model, images: np.ndarray, names: list[str]) -> dict:
    """Outputs of the original PyTorch model, float64 numpy, by ONNX output name."""
    import torch

    with torch.no_grad():
        out = model(torch.from_numpy(images))
    out = out if isinstance(out, (list, tuple)) else [out]
    return {name: value.double().numpy() for name, value in zip(names, out)}


def check_parity(model, run, names: list[str], task: str, input_size, mean, std, backend: str) -> ParityReport:
    """Run the gate.

    Args:
        model: the original PyTorch model.
        run: callable taking {input_name: images} -> {output_name: array} (the exported model).
        names: output names in order; task: "pose", "saliency" or "classification".
        input_size, mean, std: from the checkpoint metadata.
        backend: what `run` executes, for the report.
    Returns:
        The report; the caller decides whether a failure is fatal.
    """
    images = parity_inputs(input_size, mean, std)
    reference = torch_reference(model, images, names)
    outputs = run(images)
    info = {"batch": PARITY_BATCH, "seed": PARITY_SEED, "input_size": list(input_size)}
    return compare(reference, outputs, task, backend, info)
