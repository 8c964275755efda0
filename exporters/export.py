"""`export_model`: model.pt -> artifact folder (docs/artifact.md), written atomically.

Steps: load the checkpoint safely; write ONNX in the chosen precision (exporters/precision.py:
fp32 or int8, each ternary conv as our op); choose each ternary layer's kernel, our op or the
runtime's conv (exporters/kernel_choice.py, within the ops the backend's record allows); let the
backend's export step (exporters/backends/, chosen through lbdeploy/backends.py) add its files;
run the gate (parity or accuracy); store reference inputs and outputs for `lbdeploy tune`; write
manifest.json with the sha256 of every file; put the folder in place (exporters/atomic.py). On any
failure, Ctrl-C or SIGTERM the temporary folder is removed and an existing output folder is left
untouched.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Callable

from lbdeploy.exporters.atomic import atomic_folder
from lbdeploy import __version__
from lbdeploy.artifact import MODEL_FILE, io_manifest, list_files, write_manifest
from lbdeploy.backends import get_backend
from lbdeploy.errors import ConfigError
from lbdeploy.exporters.reference import write_reference
from lbdeploy.targets import host_target, resolve
from lbdeploy.tasks import task_of

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


def _ort_runner(work: Path, manifest: dict):
    """Run the exported model.onnx in ONNX Runtime here, with this machine's kernel library for custom ops."""
    from lbdeploy.runtime.backends.ort import OrtBackend

    library = None
    if manifest["custom_ops"]:
        from lbdeploy.kernels.build import build_ort_library

        library = build_ort_library()
    backend = OrtBackend(work, {**manifest, "kernel_library": None}, custom_op_library=library)
    return (lambda images: backend.run({backend.input_names[0]: images})), "ort (this machine)"


def export_model(model_pt, out_dir, target: str = "onnx", backend: str | None = None, ops: str | None = None,
                 verify: bool = True, opset: int = 18, force: bool = False, quantize: str | None = None,
                 calibration=None, kernels: str = "auto", threads: int | None = None,
                 progress: Callable[[str], None] = lambda message: None, sign_key=None) -> dict:
    """Export `model_pt` to the artifact folder `out_dir`.

    Args:
        model_pt: an lbdeploy model.pt (or an importable pytorch-pose checkpoint).
        out_dir: the artifact folder to create.
        target: a target name or alias of lbdeploy.targets.
        backend: a backend of lbdeploy.backends with an export step (default: the target's).
        ops: "custom" (our ops allowed), "standard" (plain ONNX ops only, no kernel library) or None
            (the backend's capability decides: custom where it runs our op).
        verify: run the gate and fail beyond tolerance (False: record the report only).
        opset: ONNX opset (one of OPSETS).
        force: replace an existing out_dir.
        quantize: None (float) or "int8" (exporters.precision; the accuracy gate replaces the parity gate).
        calibration: exporters.calibration.CalibrationOptions for int8 (None: the defaults).
        kernels: "auto" (each ternary layer as our op or the runtime's conv, whichever is faster where
            it runs; exporters.kernel_choice), "ternary" (our op) or "dense" (the runtime's conv).
        threads: intra-op threads the artifact will run with, for measuring the choice (None: all cores).
        progress: called with a short message before each step.
        sign_key: a PEM elliptic-curve private key: sign the folder (signature.sig, docs/signing.md)
            before it takes out_dir's place.
    Returns:
        The manifest written to out_dir/manifest.json.
    Raises:
        ConfigError / ExportError / ParityError / AccuracyError / CalibrationError / CheckpointError /
            KernelLibraryError: nothing is written then.
    """
    from lbdeploy.checkpoint import load_model
    from lbdeploy.exporters.kernel_choice import resolve_ops
    from lbdeploy.exporters.precision import prepare_precision

    if opset not in OPSETS:
        raise ConfigError(f"--opset {opset} is not one the exporter writes; choose {OPSETS.start}..{OPSETS.stop - 1}")
    export_target, backend = resolve(target, backend)
    spec = get_backend(backend)
    ops = resolve_ops(ops, kernels, spec)
    progress(f"loading {model_pt}")
    model, ckpt = load_model(model_pt)
    task = task_of(ckpt.metadata).name
    input_size = tuple(ckpt.metadata.get("input_size", ckpt.config.get("input_size")))
    has_ternary = any(type(m).__name__ in ("TernaryConv2d",) for m in model.modules())
    step = spec.load_exporter()(export_target, export_target.settings(backend), ops == "custom" and has_ternary)
    step.check()
    precision = prepare_precision(quantize, backend, calibration, ckpt, input_size, progress)
    with atomic_folder(Path(out_dir), force) as work:
        names = precision.write(model, work / MODEL_FILE, task, opset, progress)
        choice = _choose_kernels(work, precision.name, kernels, ops, export_target, backend, threads, input_size,
                                 progress)
        custom_ops = graph_custom_ops(work / MODEL_FILE)
        ternary_layers = sum(row["choice"] == "ternary" for row in choice["layers"])
        manifest = {"arch": ckpt.arch, "config": ckpt.config, **io_manifest(ckpt.metadata, ckpt.config, len(names)),
                    "target": export_target.name, "backend": backend,
                    "ops": "custom" if custom_ops else "standard", "opset": opset, "custom_ops": custom_ops,
                    "kernel_library": None, **precision.manifest(ternary_layers), "kernels": {**choice, "ops": ops}}
        manifest.update(step.add_files(work, progress))
        manifest["files"] = list_files(work)
        run, parity_backend = step.parity_runner(work, manifest) or _ort_runner(work, manifest)
        gate = precision.gate_name
        progress(f"{gate} gate: {parity_backend} vs PyTorch eager")
        report = precision.gate(model, run, names, task, parity_backend)
        manifest[gate] = report.to_dict()
        progress(report.summary())
        if verify and not report.passed:
            raise precision.error(
                f"the exported model differs from PyTorch beyond tolerance ({gate} gate, docs/export.md):\n"
                + report.summary() + "\nnothing was written; pass --no-verify to keep it anyway")
        manifest["reference"] = write_reference(work, gate, *precision.reference(model, names), names[-1])
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


def graph_custom_ops(model_path: Path) -> list[dict]:
    """The manifest's `custom_ops` of the ONNX file at `model_path`."""
    import onnx

    from lbdeploy.exporters.kernel_forms import custom_op_records

    return custom_op_records(onnx.load(str(model_path), load_external_data=False))


def _choose_kernels(work: Path, precision: str, kernels: str, ops: str, target, backend: str, threads, input_size,
                    progress) -> dict:
    """Each ternary layer's form (exporters.kernel_choice), applied to work/model.onnx."""
    from lbdeploy.exporters.kernel_choice import choose_forms, measurable_here

    library = None
    if kernels == "auto" and ops == "custom" and measurable_here(target, backend):
        from lbdeploy.kernels.build import build_ort_library

        library = build_ort_library()
    return choose_forms(work / MODEL_FILE, precision, kernels, ops, target, backend, threads=threads,
                        input_shape=(1, 3, *input_size), library=library, progress=progress)


def export_for_this_machine(model_pt, out_dir, backend: str, ops: str | None = None, kernels: str = "auto",
                            progress: Callable[[str], None] = lambda message: None) -> dict:
    """Export `model_pt` to run here with `backend` (one that exports here), e.g. to compare backends on it.

    Args:
        ops / kernels: as `export_model` (the ops the artifact may hold, each ternary layer's form).
    Returns:
        The manifest (the gate ran). Raises: as `export_model`.
    """
    return export_model(model_pt, out_dir, target=host_target().name, backend=backend, ops=ops, kernels=kernels,
                        force=True, progress=progress)
