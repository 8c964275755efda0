"""`export_model`: model.pt -> artifact folder (docs/artifact.md), written atomically.

Steps: load the checkpoint safely; export ONNX (folded, TernaryConv custom op or plain Conv);
let the backend's export step (exporters/backends/, chosen through lbdeploy/backends.py) add its
files; run the parity gate; write manifest.json with the sha256 of every file; put the folder in
place (exporters/atomic.py). On any failure, Ctrl-C or SIGTERM the temporary folder is removed and
an existing output folder is left untouched.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Callable

from lbdeploy.exporters.atomic import atomic_folder
from lbdeploy import __version__
from lbdeploy.artifact import (MODEL_FILE, REFERENCE_INPUTS, REFERENCE_OUTPUTS, io_manifest, list_files,
                               write_manifest)
from lbdeploy.backends import get_backend
from lbdeploy.errors import AccuracyError, ConfigError, ParityError
from lbdeploy.ops.ternary_conv import DOMAIN, OP_TYPE, OP_VERSION
from lbdeploy.targets import host_target, resolve

# ONNX opsets the exporter writes (torch's dynamo exporter, our op's schema).
OPSETS = range(17, 22)


def _tool_versions() -> dict:
    import onnx
    import torch

    versions = {"lbdeploy": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                "python": platform.python_version()}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return versions


def _io_manifest(ckpt, names: list[str], task: str) -> dict:
    """The manifest's task/input/outputs/pose/saliency sections for the exported outputs `names`."""
    meta = ckpt.metadata
    h, w = meta.get("input_size", ckpt.config.get("input_size"))
    if task == "pose":
        stride = meta.get("heatmap_stride", 4)
        shapes = [(1, len(meta["joints"]), h // stride, w // stride)] * len(names)
    elif task == "saliency":
        shapes = [(1, 1, h, w)] * len(names)  # logit maps at the input size
    else:
        shapes = [(1, meta["classes"])]
    return io_manifest({**meta, "task": task}, ckpt.config, names, shapes)


def _ort_runner(work: Path, manifest: dict):
    """Run the exported model.onnx in ONNX Runtime here, with this machine's kernel library for custom ops."""
    from lbdeploy.runtime.backends.ort import OrtBackend

    library = None
    if manifest["custom_ops"]:
        from lbdeploy.kernels.build import build_ort_library

        library = build_ort_library()
    backend = OrtBackend(work, {**manifest, "kernel_library": None}, custom_op_library=library)
    return (lambda images: backend.run({backend.input_names[0]: images})), "ort (this machine)"


def write_reference(work: Path, kept: dict) -> dict:
    """Write the parity gate's first case as reference/inputs.npz and reference/outputs.npz (for `lbdeploy verify`).

    inputs.npz holds the model input under its name "image"; outputs.npz each output's float64
    PyTorch reference under its name and its elementwise tolerance under "NAME.tolerance".

    Returns:
        The manifest's "reference" section.
    """
    import numpy as np

    (work / REFERENCE_INPUTS).parent.mkdir(parents=True, exist_ok=True)
    np.savez(work / REFERENCE_INPUTS, image=np.asarray(kept["inputs"], np.float32))
    np.savez(work / REFERENCE_OUTPUTS, **kept["reference"],
             **{f"{name}.tolerance": value for name, value in kept["tolerance"].items()})
    return {"inputs": REFERENCE_INPUTS, "outputs": REFERENCE_OUTPUTS, "rule": "|output - reference| <= tolerance"}


def export_model(model_pt, out_dir, target: str = "onnx", backend: str | None = None, ops: str = "custom",
                 verify: bool = True, opset: int = 18, force: bool = False, quantize: str | None = None,
                 calibration=None, progress: Callable[[str], None] = lambda message: None,
                 sign_key=None) -> dict:
    """Export `model_pt` to the artifact folder `out_dir`.

    Args:
        model_pt: an lbdeploy model.pt (or an importable pytorch-pose checkpoint).
        out_dir: the artifact folder to create.
        target: a target name or alias of lbdeploy.targets.
        backend: a backend of lbdeploy.backends with an export step (default: the target's).
        ops: "custom" (TernaryConv op) or "standard" (plain Conv, no kernel library needed).
        verify: run the parity gate and fail beyond tolerance (False: record the report only).
        opset: ONNX opset (one of OPSETS).
        force: replace an existing out_dir.
        quantize: None (float) or "int8" (exporters.quantize; the accuracy gate replaces the parity gate).
        calibration: exporters.calibration.CalibrationOptions for int8 (None: the defaults).
        progress: called with a short message before each step.
        sign_key: a PEM elliptic-curve private key: sign the folder (signature.sig, docs/signing.md)
            before it takes out_dir's place.
    Returns:
        The manifest written to out_dir/manifest.json.
    Raises:
        ConfigError / ExportError / ParityError / AccuracyError / CalibrationError / CheckpointError /
            KernelLibraryError: nothing is written then.
    """
    from lbdeploy.exporters.onnx import export_onnx
    from lbdeploy.exporters.parity import check_parity
    from lbdeploy.checkpoint import load_model

    if opset not in OPSETS:
        raise ConfigError(f"--opset {opset} is not one the exporter writes; choose {OPSETS.start}..{OPSETS.stop - 1}")
    export_target, backend = resolve(target, backend)
    progress(f"loading {model_pt}")
    model, ckpt = load_model(model_pt)
    task = ckpt.metadata.get("task", "pose")
    input_size = tuple(ckpt.metadata.get("input_size", ckpt.config.get("input_size")))
    has_ternary = any(type(m).__name__ in ("TernaryConv2d",) for m in model.modules())
    custom = ops == "custom" and has_ternary
    step = get_backend(backend).load_exporter()(export_target, export_target.settings(backend), custom)
    step.check()
    if quantize:
        from lbdeploy.exporters.quantize import Int8Export

        int8 = Int8Export.prepare(quantize, backend, calibration, ckpt, input_size, progress)
    with atomic_folder(Path(out_dir), force) as work:
        if quantize:
            names, custom = int8.write(model, work / MODEL_FILE, task, opset, progress)
            step.custom_ops = custom
        else:
            progress(f"exporting ONNX (opset {opset}, {'TernaryConv custom op' if custom else 'standard ops'})")
            names = export_onnx(model, work / MODEL_FILE, input_size, task, ops="custom" if custom else "standard",
                                opset=opset)
        manifest = {"arch": ckpt.arch, "config": ckpt.config,
                    **_io_manifest(ckpt, names, task), "target": export_target.name, "backend": backend,
                    "ops": "custom" if custom else "standard", "opset": opset,
                    "custom_ops": [{"domain": DOMAIN, "op_type": OP_TYPE, "version": OP_VERSION}] if custom else [],
                    "kernel_library": None, **(int8.manifest() if quantize else {"precision": "fp32"})}
        manifest.update(step.add_files(work, progress))
        manifest["files"] = list_files(work)
        run, parity_backend = step.parity_runner(work, manifest) or _ort_runner(work, manifest)
        gate = "accuracy" if quantize else "parity"
        progress(f"{gate} gate: {parity_backend} vs PyTorch eager")
        kept: dict = {}
        report = (int8.gate(model, run, names, task, parity_backend) if quantize else
                  check_parity(model, run, names, task, input_size, ckpt.metadata["mean"], ckpt.metadata["std"],
                               parity_backend, keep=kept))
        if kept:
            manifest["reference"] = write_reference(work, kept)
        manifest[gate] = report.to_dict()
        progress(report.summary())
        if verify and not report.passed:
            raise (AccuracyError if quantize else ParityError)(
                f"the exported model differs from PyTorch beyond tolerance ({gate} gate, docs/export.md):\n"
                + report.summary() + "\nnothing was written; pass --no-verify to keep it anyway")
        manifest["tools"] = _tool_versions()
        manifest = write_manifest(work, manifest)
        if sign_key is not None:
            from lbdeploy.signing import sign_artifact

            progress(f"signing with {sign_key}")
            sign_artifact(work, sign_key)
    steps = step.next_steps(manifest)
    if steps:
        progress(steps)
    return manifest


def export_for_this_machine(model_pt, out_dir, backend: str,
                            progress: Callable[[str], None] = lambda message: None) -> dict:
    """Export `model_pt` to run here with `backend` (one that exports here), e.g. to compare backends on it.

    Returns:
        The manifest (the parity gate ran). Raises: as `export_model`.
    """
    return export_model(model_pt, out_dir, target=host_target().name, backend=backend, force=True, progress=progress)
