"""The parity gate: the exported model must compute what the original PyTorch model computes.

Every export runs the exported model beside the original (unfolded) PyTorch model on fixed
inputs: seeded random images, the bundled photo lbdeploy/data/sample.jpg and people of the
synthetic set (lbdeploy/data/synthetic.py). The reference is the PyTorch model in float64, so
the reference itself carries no float32 rounding. Tolerances are per map (one heatmap of one
image; one image's logits for a classifier), elementwise, from scales that grow with that map
rather than with the largest activation of the network (docs/export.md):

    |exported - reference| <= ATOL + RTOL * spread + NOISE_FACTOR * noise      at every element

- spread: max - min of the reference map (a heatmap's contrast, the logits' range);
- noise: max |PyTorch float32 - PyTorch float64| on that map, the rounding that float32 itself
  makes on this network (an exact export in another summation order errs by about as much).

An exact export errs by ~2e-6 of the spread, also on untrained networks whose heatmaps reach 1e8;
a flipped ternary filter, a wrong BN fold or swapped outputs err by > 1e-2 of it
(tests/test_parity.py). The final output must also agree by its task's rule (lbdeploy.tasks:
pose keeps every joint's argmax up to ties, saliency every pixel's side of 0.5 and its probability
within the logit tolerance / 4 -- the sigmoid's largest slope --, classification every top-1
class). To add an input kind, extend `parity_inputs`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import lbdeploy.data
from lbdeploy.errors import ParityError
from lbdeploy.tasks import get_task

RTOL = 1e-4
NOISE_FACTOR = 10.0
ATOL = 1e-6
PARITY_SEED = 20210101
RANDOM_IMAGES = 1
SYNTHETIC_PEOPLE = 1
SAMPLE_IMAGE = Path(lbdeploy.data.__file__).resolve().parent / "sample.jpg"  # package data, checkout or installed


@dataclass
class OutputParity:
    """Error of one output over all its maps; `worst_ratio` is max(error / tolerance) over elements."""

    name: str
    max_abs_error: float
    mean_abs_error: float
    reference_max_abs: float
    worst_ratio: float
    tolerance: float  # the tolerance of the map where the worst ratio occurs
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
    saliency_prob_worst_ratio: float | None = None  # max |prob err| / (logit tolerance / 4; lbdeploy.tasks.saliency)
    passed: bool = False
    agreement_lines: list = field(default_factory=list)  # the task's rule in words (not stored)

    def to_dict(self) -> dict:
        """JSON-friendly form stored in manifest.json."""
        stored = {key: value for key, value in asdict(self).items() if key != "agreement_lines"}
        return {**stored, "tolerances": {"rtol_of_spread": RTOL, "noise_factor": NOISE_FACTOR, "atol": ATOL}}

    def summary(self) -> str:
        """One line per output plus the agreement figures."""
        lines = [f"  {o.name}: max |err| {o.max_abs_error:.2e}, worst err/tol {o.worst_ratio:.2e} "
                 f"(tol there {o.tolerance:.2e}), mean {o.mean_abs_error:.2e}{'' if o.passed else '  FAIL'}"
                 for o in self.outputs]
        lines += [f"  {line}" for line in self.agreement_lines]
        return "\n".join(lines)


def _resized(image: np.ndarray, input_size) -> np.ndarray:
    from PIL import Image

    h, w = input_size
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)


def parity_images(input_size) -> tuple[np.ndarray, list[str]]:
    """The gate's images as [N, H, W, 3] uint8 RGB, with what each one is.

    Seeded uniform noise (every pixel value), the bundled sample.jpg and people of the synthetic
    validation set, resized to `input_size` (H, W).
    """
    from lbdeploy.data.synthetic import SyntheticPoses, person_image
    from lbdeploy.transforms import load_image

    rng = np.random.default_rng(PARITY_SEED)
    images = [rng.integers(0, 256, (*input_size, 3), dtype=np.uint8) for _ in range(RANDOM_IMAGES)]
    kinds = [f"random (seed {PARITY_SEED})"] * RANDOM_IMAGES
    images.append(_resized(load_image(SAMPLE_IMAGE), input_size))
    kinds.append("lbdeploy/data/sample.jpg")
    people = SyntheticPoses("val", seed=PARITY_SEED)
    images += [_resized(person_image(people, i), input_size) for i in range(SYNTHETIC_PEOPLE)]
    kinds += [f"synthetic val #{i}" for i in range(SYNTHETIC_PEOPLE)]
    return np.stack(images), kinds


def _map_axes(array: np.ndarray) -> tuple:
    """Axes within one map: spatial axes of [N, C, H, W]; the class axis of [N, classes]."""
    return tuple(range(2, array.ndim)) if array.ndim > 2 else (1,)


def map_tolerance(reference: np.ndarray, float32_reference: np.ndarray) -> np.ndarray:
    """ATOL + RTOL * spread + NOISE_FACTOR * noise per map, broadcastable against the output."""
    axes = _map_axes(reference)
    spread = reference.max(axis=axes, keepdims=True) - reference.min(axis=axes, keepdims=True)
    noise = np.abs(float32_reference - reference).max(axis=axes, keepdims=True)
    return ATOL + RTOL * spread + NOISE_FACTOR * noise


def _output_parity(name: str, ref: np.ndarray, ref32: np.ndarray, out: np.ndarray) -> tuple[OutputParity, np.ndarray]:
    tol = map_tolerance(ref, ref32)
    err = np.abs(out.astype(np.float64) - ref)
    ratio = np.nan_to_num(err / tol, nan=np.inf)  # a NaN anywhere (output or reference) fails
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    worst_tol = float(np.broadcast_to(tol, ratio.shape)[worst])
    return OutputParity(name, float(err.max()), float(err.mean()), float(np.abs(ref).max()), float(ratio.max()),
                        worst_tol, bool(ratio.max() <= 1.0)), tol


def compare(reference: dict, float32_reference: dict, outputs: dict, task: str, backend: str,
            inputs_info: dict) -> ParityReport:
    """Compare named outputs against the float64 reference (and its float32 twin for the noise) and build the report.

    Raises:
        ParityError: an output is missing or has another shape.
    """
    report = ParityReport(backend=backend, inputs=inputs_info)
    final_tol = None
    for name, ref in reference.items():
        if name not in outputs:
            raise ParityError(f"the exported model has no output {name!r}")
        out = np.asarray(outputs[name])
        if out.shape != ref.shape:
            raise ParityError(f"output {name!r} has shape {out.shape}, PyTorch gives {ref.shape}")
        result, final_tol = _output_parity(name, ref, float32_reference[name], out)
        report.outputs.append(result)
    final_name = list(reference)[-1]
    agreement = get_task(task).parity(reference[final_name], np.asarray(outputs[final_name]), final_tol)
    for key, value in agreement.fields.items():
        setattr(report, key, value)
    report.agreement_lines = agreement.lines
    report.passed = all(o.passed for o in report.outputs) and agreement.passed
    return report


def torch_outputs(model, images: np.ndarray, names: list[str]) -> dict:
    """Outputs of a PyTorch model on `images` (in the model's and the images' dtype), as float64 numpy by name."""
    import torch

    with torch.no_grad():
        out = model(torch.from_numpy(images))
    out = out if isinstance(out, (list, tuple)) else [out]
    return {name: value.double().numpy() for name, value in zip(names, out)}


def torch_references(model, images: np.ndarray, names: list[str]) -> tuple[dict, dict]:
    """Outputs of the original PyTorch model in float64 and in float32 (both as float64 numpy), by output name."""
    float32 = torch_outputs(model, images, names)
    float64 = torch_outputs(copy.deepcopy(model).double(), images.astype(np.float64), names)
    return float64, float32


@dataclass(frozen=True)
class GateInputs:
    """The gate's images and PyTorch's outputs on them: what the gate compares against and what an
    artifact's reference/ keeps, computed once per export."""

    images: np.ndarray  # normalized NCHW float32
    kinds: list  # what each image is (parity_images)
    float64: dict  # output name -> the model's output in float64
    float32: dict  # output name -> the model's output in float32 (as float64 numpy)


def gate_inputs(model, names: list[str], input_size, mean, std) -> GateInputs:
    """The parity images for `input_size`, normalized with `mean` / `std`, and `model`'s outputs on them."""
    from lbdeploy.transforms import normalize

    pixels, kinds = parity_images(input_size)
    images = normalize(pixels, {"mean": list(mean), "std": list(std)})
    float64, float32 = torch_references(model, images, names)
    return GateInputs(images, kinds, float64, float32)


def check_parity(run, inputs: GateInputs, task: str, input_size, backend: str) -> ParityReport:
    """Run the gate.

    Args:
        run: callable taking NCHW float32 images -> {output_name: array} (the exported model).
        inputs: the images and the original PyTorch model's outputs (`gate_inputs`).
        task: "pose", "saliency" or "classification"; input_size: (H, W), for the report.
        backend: what `run` executes, for the report.
    Returns:
        The report; the caller decides whether a failure is fatal.
    Raises:
        ParityError: the exported model lacks an output or gives another shape.
    """
    outputs = run(inputs.images)
    info = {"images": inputs.kinds, "input_size": list(input_size)}
    return compare(inputs.float64, inputs.float32, outputs, task, backend, info)
