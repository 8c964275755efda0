"""Compile an exported model.onnx into the artifact's TVM module (`tvm/model.so`).

    fragment = compile_artifact("out/model.onnx", "rpi4", "out/")

imports the ONNX graph (importer.py), runs our Relax pipeline — BatchNorm decomposed for
inference, legalize, constant folding, operator fusion, then our schedules (schedules.py) — builds
for the preset's target (targets.py) and links the .so with the preset's (cross) compiler. The
returned dict is merged into manifest.json by the exporter.

To change the pipeline, edit `relax_pipeline`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from lbdeploy.errors import ExportError

MODULE_PATH = "tvm/model.so"
# TVM's own lowering after scheduling (as its CPU pipeline; listed because 0.27's dispatcher
# for CPU targets is broken).
LOWERING_PASSES = (
    "RewriteDataflowReshape", "ToNonDataflow", "RemovePurityChecking", "CallTIRRewrite",
    "StaticPlanBlockMemory", "LowerAllocTensor", "KillAfterLastUse", "LowerRuntimeBuiltin",
    "ComputePrimValue", "VMShapeLower", "AttachGlobalSymbol",
)


def relax_pipeline(target, preset):
    """The Relax pass pipeline for `preset` (scheduling every PrimFunc)."""
    import tvm
    from tvm import relax

    from exporters.tvm.schedules import cpu_schedule_pass, gpu_schedule_pass

    schedule = gpu_schedule_pass() if preset.gpu else cpu_schedule_pass(preset.vector_floats)

    @tvm.transform.module_pass(opt_level=0, name="LbdeployPipeline")
    def _pipeline(mod, _ctx):
        with target:
            passes = [
                relax.transform.DecomposeOpsForInference(),
                relax.transform.LegalizeOps(),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
                schedule,
                *[getattr(relax.transform, name)() for name in LOWERING_PASSES],
            ]
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


@contextlib.contextmanager
def _cuda_libdevice():
    """Make CUDA's libdevice findable for the nvptx code generator during a GPU build.

    TVM links libdevice (bitcode for expf etc.) into the PTX, so a build needs it, although the
    board does not. It comes from CUDA_PATH / an nvcc on PATH, or from the pip package
    nvidia-cuda-nvcc-cu12, which is shown to TVM as a minimal toolkit folder.
    """
    if "CUDA_PATH" in os.environ or shutil.which("nvcc"):
        yield
        return
    try:
        from importlib import metadata

        import nvidia.cuda_nvcc as wheel

        version = metadata.version("nvidia-cuda-nvcc-cu12")
    except ImportError as err:
        raise ExportError(
            "GPU targets need CUDA's libdevice to build (not on the board): "
            "pip install nvidia-cuda-nvcc-cu12, or set CUDA_PATH to a CUDA toolkit"
        ) from err
    libdevice = Path(next(iter(wheel.__path__))) / "nvvm" / "libdevice"
    with tempfile.TemporaryDirectory(prefix="lbdeploy-cuda-") as root:
        (Path(root) / "nvvm").mkdir()
        (Path(root) / "nvvm" / "libdevice").symlink_to(libdevice)
        (Path(root) / "version.txt").write_text(f"CUDA Version {version}\n")
        os.environ["CUDA_PATH"] = root
        try:
            yield
        finally:
            del os.environ["CUDA_PATH"]


def build(model, preset):
    """Import and compile an ONNX ModelProto for `preset`; returns the TVM executable.

    Raises:
        ExportError: unsupported ops, or a build the target cannot take.
    """
    import tvm

    from exporters.tvm.importer import import_onnx

    mod = import_onnx(model, gpu=preset.gpu, vector_floats=preset.vector_floats)
    target = preset.tvm_target()
    with _cuda_libdevice() if preset.gpu else contextlib.nullcontext():
        return tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target, preset))


def export_module(executable, preset, path: Path) -> None:
    """Link `executable` into the shared library `path` with the preset's compiler.

    Raises:
        ExportError: the cross-compiler is not installed.
    """
    fcompile = None
    if preset.cross_compiler:
        if shutil.which(preset.cross_compiler) is None:
            raise ExportError(
                f"target {preset.name} links with {preset.cross_compiler}, which is not installed; "
                "on Debian/Ubuntu: apt-get install gcc-aarch64-linux-gnu"
            )
        from tvm.support import cc

        fcompile = cc.cross_compiler(preset.cross_compiler)
    path.parent.mkdir(parents=True, exist_ok=True)
    executable.export_library(str(path), fcompile=fcompile)


def io_names(model) -> tuple[list[str], list[str]]:
    """The graph's real inputs (initializers excluded) and outputs, in order."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    return inputs, [o.name for o in model.graph.output]


def compile_artifact(onnx_path, target_name: str, out_dir) -> dict:
    """Compile `onnx_path` for the preset `target_name` into `out_dir`/tvm/model.so.

    Args:
        onnx_path: the exported model.onnx (static input shape, TernaryConv nodes allowed).
        target_name: a preset of exporters.tvm.targets (x86, arm64, rpi4, rpi5, jetson-...).
        out_dir: the artifact folder being written.
    Returns:
        The manifest fragment: {"target": ..., "tvm": {"module", "device", "target", "arch",
        "inputs", "outputs", "tvm_version", "compile_seconds"}}.
    Raises:
        ConfigError: unknown target. ExportError: import, build or link failed.
    """
    import onnx
    import tvm

    from exporters.tvm.targets import get_target

    preset = get_target(target_name)
    model = onnx.load(str(onnx_path))
    started = time.perf_counter()
    executable = build(model, preset)
    export_module(executable, preset, Path(out_dir) / MODULE_PATH)
    inputs, outputs = io_names(model)
    return {
        "target": preset.name,
        "tvm": {
            "module": MODULE_PATH,
            "device": "cuda" if preset.gpu else "cpu",
            "target": preset.target,
            "arch": preset.arch,
            "inputs": inputs,
            "outputs": outputs,
            "tvm_version": tvm.__version__,
            "compile_seconds": round(time.perf_counter() - started, 1),
        },
    }
