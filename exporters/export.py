"""`export_model`: model.pt -> artifact folder (docs/artifact.md), written atomically.

Steps: load the checkpoint safely; export ONNX (folded, TernaryConv custom op or plain Conv);
add the target's backend files (our ONNX Runtime kernel library, a TVM module, or TensorRT plugin
sources); run the parity gate; write manifest.json with the sha256 of every file; rename the
temporary folder into place. On any failure or Ctrl-C the temporary folder is removed and an
existing output folder is left untouched.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from lbdeploy import __version__
from lbdeploy.errors import AccuracyError, ExportError, ParityError
from lbdeploy.ops.ternary_conv import DOMAIN, OP_TYPE, OP_VERSION
from runtime.artifact import io_manifest

FORMAT = "lbdeploy-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
KERNEL_FILE = "kernels/libternary_ort.so"


@contextmanager
def atomic_folder(out_dir: Path, force: bool):
    """Yield a temporary sibling folder that replaces `out_dir` only if the block succeeds."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise ExportError(f"{out_dir} already exists; choose another -o or pass --force to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp makes it private; the artifact should be a normal folder
    try:
        yield work
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / "previous")
            os.replace(work, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, out_dir)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _host_arch() -> str:
    from lbdeploy.kernels.elf import host_arch

    return host_arch()


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
    """The manifest's task/input/outputs/pose sections for the exported outputs `names`."""
    meta = ckpt.metadata
    h, w = meta.get("input_size", ckpt.config.get("input_size"))
    if task == "pose":
        stride = meta.get("heatmap_stride", 4)
        shapes = [(1, len(meta["joints"]), h // stride, w // stride)] * len(names)
    else:
        shapes = [(1, meta["classes"])]
    return io_manifest({**meta, "task": task}, ckpt.config, names, shapes)


def _ort_runner(work: Path, custom_ops: list, library: Path | None):
    """Run the exported model.onnx in ONNX Runtime here, with `library` (this machine's build) for custom ops."""
    from runtime.backends.ort import OrtBackend

    backend = OrtBackend(work, {"custom_ops": custom_ops, "kernel_library": {"path": str(library)} if library else None})
    return lambda images: backend.run({backend.input_names[0]: images})


def export_model(model_pt, out_dir, target: str = "onnx", backend: str | None = None, ops: str = "custom",
                 verify: bool = True, opset: int = 18, force: bool = False, quantize: str | None = None,
                 calibration=None, progress: Callable[[str], None] = lambda message: None) -> dict:
    """Export `model_pt` to the artifact folder `out_dir`.

    Args:
        model_pt: an lbdeploy model.pt (or an importable pytorch-pose checkpoint).
        out_dir: the artifact folder to create.
        target: an exporters.targets.TARGETS name.
        backend: "ort", "tvm" or "tensorrt" (default: the target's).
        ops: "custom" (TernaryConv op) or "standard" (plain Conv, no kernel library needed).
        verify: run the parity gate and fail beyond tolerance (False: record the report only).
        opset: ONNX opset (>= 17).
        force: replace an existing out_dir.
        quantize: None (float) or "int8" (exporters.quantize; the accuracy gate replaces the parity gate).
        calibration: exporters.calibration.CalibrationOptions for int8 (None: the defaults).
        progress: called with a short message before each step.
    Returns:
        The manifest written to out_dir/manifest.json.
    Raises:
        ExportError / ParityError / AccuracyError / CalibrationError / CheckpointError / KernelLibraryError:
        nothing is written then.
    """
    from exporters.onnx import export_onnx
    from exporters.parity import check_parity
    from exporters.targets import get_export_target
    from lbdeploy.checkpoint import load_model
    from runtime.artifact import file_sha256

    export_target, backend = get_export_target(target, backend)
    progress(f"loading {model_pt}")
    model, ckpt = load_model(model_pt)
    task = ckpt.metadata.get("task", "pose")
    input_size = tuple(ckpt.metadata.get("input_size", ckpt.config.get("input_size")))
    has_ternary = any(type(m).__name__ in ("TernaryConv2d",) for m in model.modules())
    custom = ops == "custom" and has_ternary
    if backend == "tensorrt":
        from exporters.tensorrt import check_tensorrt_target

        check_tensorrt_target(target, custom_ops=custom)
    if quantize:
        from exporters.quantize import Int8Export

        int8 = Int8Export.prepare(quantize, backend, calibration, ckpt, input_size, progress)
    with atomic_folder(Path(out_dir), force) as work:
        if quantize:
            names, custom = int8.write(model, work / MODEL_FILE, task, opset, progress)
        else:
            progress(f"exporting ONNX (opset {opset}, {'TernaryConv custom op' if custom else 'standard ops'})")
            names = export_onnx(model, work / MODEL_FILE, input_size, task, ops="custom" if custom else "standard",
                                opset=opset)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": ckpt.arch, "config": ckpt.config,
                    **_io_manifest(ckpt, names, task), "target": target, "backend": backend,
                    "ops": "custom" if custom else "standard", "opset": opset,
                    "custom_ops": [{"domain": DOMAIN, "op_type": OP_TYPE, "version": OP_VERSION}] if custom else [],
                    "kernel_library": None, **(int8.manifest() if quantize else {"precision": "fp32"})}
        host_library = None
        if custom:
            from lbdeploy.kernels.build import build_ort_library

            progress("building the TernaryConv kernel library for this machine")
            host_library = build_ort_library()
        if backend == "ort" and custom:
            arch = export_target.cpu_arch or _host_arch()
            progress(f"building the ONNX Runtime kernel library for {arch}")
            library = host_library if arch == _host_arch() else build_ort_library(arch=arch)
            (work / "kernels").mkdir()
            shutil.copy2(library, work / KERNEL_FILE)
            manifest["kernel_library"] = {"path": KERNEL_FILE, "arch": arch}
        run, parity_backend = _ort_runner(work, manifest["custom_ops"], host_library), "ort (this machine)"
        if backend == "tvm":
            from exporters.tvm.compile import compile_artifact

            progress(f"compiling with TVM for {target}")
            manifest.update(compile_artifact(work / MODEL_FILE, "jetson-orin" if target == "jetson" else target, work))
            if manifest.get("tvm", {}).get("arch") == _host_arch() and not manifest.get("tvm", {}).get("gpu"):
                from runtime.backends.tvm import TVMBackend

                tvm_backend = TVMBackend(work, manifest)
                run, parity_backend = (lambda images: tvm_backend.run({tvm_backend.input_names[0]: images})), "tvm"
        elif backend == "tensorrt":
            from exporters.tensorrt import add_tensorrt_files, next_steps_text

            manifest.update(add_tensorrt_files(work, target, custom_ops=custom))
            progress(next_steps_text(manifest))
        gate = "accuracy" if quantize else "parity"
        progress(f"{gate} gate: {parity_backend} vs PyTorch eager")
        report = (int8.gate(model, run, names, task, parity_backend) if quantize else
                  check_parity(model, run, names, task, input_size, ckpt.metadata["mean"], ckpt.metadata["std"],
                               parity_backend))
        manifest[gate] = report.to_dict()
        progress(report.summary())
        if verify and not report.passed:
            raise (AccuracyError if quantize else ParityError)(
                f"the exported model differs from PyTorch beyond tolerance ({gate} gate, docs/export.md):\n"
                + report.summary() + "\nnothing was written; pass --no-verify to keep it anyway")
        manifest["tools"] = _tool_versions()
        manifest["files"] = {p.relative_to(work).as_posix(): file_sha256(p)
                             for p in sorted(work.rglob("*")) if p.is_file()}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def export_for_this_machine(model_pt, out_dir, backend: str,
                            progress: Callable[[str], None] = lambda message: None) -> dict:
    """Export `model_pt` to run here with `backend` ("ort" or "tvm"), e.g. to compare backends on it.

    Returns:
        The manifest (the parity gate ran). Raises: as `export_model`.
    """
    from exporters.targets import host_target

    return export_model(model_pt, out_dir, target=host_target(), backend=backend, force=True, progress=progress)
