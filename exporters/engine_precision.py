"""The precision gate of reduced-precision TensorRT engines: fp16 must find the keypoints fp32 finds.

`build-engine --fp16` runs the new engine and ONNX Runtime in float32 (the artifact's model.onnx with
this machine's TernaryConv kernel library) on PRECISION_IMAGES fixed seeded images and keeps the
engine only when `compare_precision` passes (docs/tensorrt.md, "Precision"):

the final outputs agree by the task's precision rule (lbdeploy.tasks: pose, every decoded
keypoint within one heatmap pixel of float32's or a near-equal tie; classification, every top-1
class or a tie; saliency, every pixel's side of 0.5).

The largest absolute output error is reported too, never gated: after hundreds of layers fp16 heatmap
values differ by ~1e-2 while the keypoints stay put. To gate another precision (int8), call
`check_engine_precision` with its runner; to change a tolerance, change the task's constant and the docs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from lbdeploy.errors import ParityError
from lbdeploy.tasks import get_task
from lbdeploy.tasks.pose import KEYPOINT_TOLERANCE, PRECISION_TIE_RTOL
from lbdeploy.transforms import normalize

PRECISION_IMAGES = 4
PRECISION_SEED = 20240917


@dataclass
class PrecisionReport:
    """How a reduced-precision engine's final output compares with float32 ONNX Runtime."""

    task: str
    images: int
    max_abs_error: float
    reference_max_abs: float
    agreeing: int  # joints (pose), images (classification) or pixels (saliency) within tolerance or tied
    total: int
    worst_keypoint_shift: float | None  # heatmap pixels, over the non-tied joints (pose only)
    passed: bool

    def to_dict(self) -> dict:
        """JSON form for engine.json, with the tolerances used."""
        return {**asdict(self), "keypoint_tolerance": KEYPOINT_TOLERANCE, "tie_rtol": PRECISION_TIE_RTOL}

    def summary(self) -> str:
        """One line for the build log or the error message."""
        what = {"images": "top-1 classes"}.get(get_task(self.task).unit, get_task(self.task).unit)
        shift = "" if self.worst_keypoint_shift is None else \
            f", worst keypoint shift {self.worst_keypoint_shift:.2f} heatmap px (tolerance {KEYPOINT_TOLERANCE})"
        return (f"{self.agreeing}/{self.total} {what} agree with float32 on {self.images} images{shift}; "
                f"max |error| {self.max_abs_error:.3g} (outputs up to {self.reference_max_abs:.3g})")


def compare_precision(reference: np.ndarray, candidate: np.ndarray, task: str) -> PrecisionReport:
    """Compare a final output with float32's by the task's precision rule.

    Raises:
        ParityError: the shapes differ.
    """
    reference = np.asarray(reference, dtype=np.float32)
    candidate = np.asarray(candidate, dtype=np.float32)
    if reference.shape != candidate.shape:
        raise ParityError(f"the engine's output has shape {candidate.shape}, float32 ONNX Runtime gives "
                          f"{reference.shape}; rebuild the engine from this artifact")
    agreement = get_task(task).precision(reference, candidate)
    return PrecisionReport(task, reference.shape[0], float(np.abs(candidate - reference).max()),
                           float(np.abs(reference).max()), passed=agreement.passed, **agreement.fields)


def precision_images(manifest: dict, count: int = PRECISION_IMAGES) -> np.ndarray:
    """`count` fixed seeded images normalized as the artifact's manifest says (NCHW float32)."""
    spec = manifest["input"]
    height, width = (int(v) for v in spec["shape"][2:])
    pixels = np.random.default_rng(PRECISION_SEED).integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    return normalize(pixels, spec)


def final_output_name(manifest: dict) -> str:
    """The name of the output the gate compares (the one marked final)."""
    return next(o["name"] for o in manifest["outputs"] if o.get("final", True))


def check_engine_precision(reference_run: Callable[[np.ndarray], dict], engine_run: Callable[[np.ndarray], dict],
                           manifest: dict, label: str = "fp16") -> PrecisionReport:
    """Run both on `precision_images` (one image at a time) and compare their final outputs.

    Args:
        reference_run, engine_run: images [N,3,H,W] -> {output name: array}; the reference is float32.
        manifest: the artifact's manifest (task, input normalization, outputs).
        label: the engine's precision, for the message.
    Returns:
        The report (passed).
    Raises:
        ParityError: the engine's keypoints (or classes) differ beyond the tolerances; the message
            says by how much and what to do.
    """
    name = final_output_name(manifest)
    images = precision_images(manifest)
    reference = np.concatenate([reference_run(images[i:i + 1])[name] for i in range(len(images))])
    candidate = np.concatenate([engine_run(images[i:i + 1])[name] for i in range(len(images))])
    report = compare_precision(reference, candidate, get_task(manifest.get("task")).name)
    if not report.passed:
        raise ParityError(f"the {label} engine does not reproduce float32 ONNX Runtime (docs/tensorrt.md, Precision): "
                          f"{report.summary()}; the engine was not kept: build without --fp16")
    return report


def ort_float32_runner(artifact_dir, manifest: dict) -> Callable[[np.ndarray], dict]:
    """ONNX Runtime (CPU, float32) on the artifact's model.onnx, with this machine's TernaryConv library.

    Raises:
        BackendUnavailable: onnxruntime is not installed. KernelLibraryError: the library cannot be built.
    """
    from lbdeploy.kernels.build import build_ort_library
    from lbdeploy.runtime.backends.ort import OrtBackend

    custom_ops = manifest.get("custom_ops") or []
    library = build_ort_library() if custom_ops else None
    backend = OrtBackend(artifact_dir, {"custom_ops": custom_ops,
                                        "kernel_library": {"path": str(library)} if library else None})
    return lambda images: backend.run({backend.input_names[0]: images})
