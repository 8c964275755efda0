"""The precision gate of reduced-precision TensorRT engines: fp16 must find the keypoints fp32 finds.

`build-engine --fp16` runs the new engine and ONNX Runtime in float32 (the artifact's model.onnx with
this machine's TernaryConv kernel library) on PRECISION_IMAGES fixed seeded images and keeps the
engine only when `compare_precision` passes (docs/tensorrt.md, "Precision"):

- pose: every joint's decoded keypoint (argmax + quarter-pixel refinement, lbdeploy.pose.decode)
  lies within KEYPOINT_TOLERANCE heatmap pixels of the float32 one, or is a tie: the float32
  heatmap at the engine's peak is within TIE_RTOL of its own peak (fp16 keeps ~3 significant
  digits, so two near-equal peaks may swap without the pose changing).
- classification: every image's top-1 class agrees, or is such a tie between the two logits.

The largest absolute output error is reported too, never gated: after hundreds of layers fp16 heatmap
values differ by ~1e-2 while the keypoints stay put. To gate another precision (int8), call
`check_engine_precision` with its runner; to change a tolerance, change the constant and the docs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from lbdeploy.errors import ParityError
from lbdeploy.pose.decode import decode_heatmaps
from lbdeploy.transforms import normalize

PRECISION_IMAGES = 4
PRECISION_SEED = 20240917
KEYPOINT_TOLERANCE = 1.0  # heatmap pixels (x heatmap_stride input pixels)
TIE_RTOL = 1e-2  # relative to the float32 peak: fp16 rounding of a heatmap or logit


@dataclass
class PrecisionReport:
    """How a reduced-precision engine's final output compares with float32 ONNX Runtime."""

    task: str
    images: int
    max_abs_error: float
    reference_max_abs: float
    agreeing: int  # joints (pose) or images (classification) within tolerance or tied
    total: int
    worst_keypoint_shift: float | None  # heatmap pixels, over the non-tied joints (pose only)
    passed: bool

    def to_dict(self) -> dict:
        """JSON form for engine.json, with the tolerances used."""
        return {**asdict(self), "keypoint_tolerance": KEYPOINT_TOLERANCE, "tie_rtol": TIE_RTOL}

    def summary(self) -> str:
        """One line for the build log or the error message."""
        what = "joints" if self.task == "pose" else "top-1 classes"
        shift = "" if self.worst_keypoint_shift is None else \
            f", worst keypoint shift {self.worst_keypoint_shift:.2f} heatmap px (tolerance {KEYPOINT_TOLERANCE})"
        return (f"{self.agreeing}/{self.total} {what} agree with float32 on {self.images} images{shift}; "
                f"max |error| {self.max_abs_error:.3g} (outputs up to {self.reference_max_abs:.3g})")


def _ties(reference: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Rows of `reference` [rows, values] whose value at `chosen` is within TIE_RTOL of their maximum."""
    rows = np.arange(reference.shape[0])
    peak = reference.max(axis=1)
    return peak - reference[rows, chosen] <= TIE_RTOL * np.maximum(np.abs(peak), 1e-12)


def compare_precision(reference: np.ndarray, candidate: np.ndarray, task: str) -> PrecisionReport:
    """Compare a final output (heatmaps [N,J,H,W] for pose, logits [N,C] otherwise) with float32's.

    Raises:
        ParityError: the shapes differ.
    """
    reference = np.asarray(reference, dtype=np.float32)
    candidate = np.asarray(candidate, dtype=np.float32)
    if reference.shape != candidate.shape:
        raise ParityError(f"the engine's output has shape {candidate.shape}, float32 ONNX Runtime gives "
                          f"{reference.shape}; rebuild the engine from this artifact")
    error = float(np.abs(candidate - reference).max())
    ref_max = float(np.abs(reference).max())
    if task == "pose":
        n, j = reference.shape[:2]
        ref_xy, _ = decode_heatmaps(reference)
        out_xy, _ = decode_heatmaps(candidate)
        shift = np.abs(out_xy - ref_xy).max(axis=-1).reshape(n * j)
        flat_ref = reference.reshape(n * j, -1)
        tied = _ties(flat_ref, candidate.reshape(n * j, -1).argmax(axis=1))
        close = shift <= KEYPOINT_TOLERANCE
        agreeing = close | tied
        worst = float(shift[~tied].max()) if (~tied).any() else 0.0
        return PrecisionReport(task, n, error, ref_max, int(agreeing.sum()), n * j, worst, bool(agreeing.all()))
    same = reference.argmax(axis=1) == candidate.argmax(axis=1)
    agreeing = same | _ties(reference, candidate.argmax(axis=1))
    return PrecisionReport(task, reference.shape[0], error, ref_max, int(agreeing.sum()), reference.shape[0], None,
                           bool(agreeing.all()))


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
    report = compare_precision(reference, candidate, manifest.get("task", "pose"))
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
