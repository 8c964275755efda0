"""Compile an exported model.onnx into the artifact's TVM module (`tvm/model.so`).

    fragment = compile_artifact("out/model.onnx", get_target("rpi4"), "out/")   # lbdeploy.targets.get_target

imports the ONNX graph (importer.py), runs our Relax pipeline — BatchNorm decomposed for
inference, legalize, operator fusion, then our schedules (schedules.py) — builds
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
from lbdeploy.targets import Target

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

    from lbdeploy.exporters.tvm.schedules import cpu_schedule_pass, gpu_schedule_pass

    schedule = gpu_schedule_pass() if preset.gpu else cpu_schedule_pass(preset.vector_floats)

    @tvm.transform.module_pass(opt_level=0, name="LbdeployPipeline")
    def _pipeline(mod, _ctx):
        with target:
            passes = [
                relax.transform.DecomposeOpsForInference(),
                relax.transform.LegalizeOps(),
                relax.transform.AnnotateTIROpPattern(),
                # No FoldConstant: it builds and runs a kernel per constant expression (minutes
                # for 8 stacks); BatchNorm is folded by the importer, constant bias reshapes fuse.
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
                schedule,
                *[getattr(relax.transform, name)() for name in LOWERING_PASSES],
            ]
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def _has_libdevice(root) -> bool:
    return bool(root) and (Path(root) / "nvvm" / "libdevice").is_dir()


@contextlib.contextmanager
def _cuda_libdevice():
    """Make CUDA's libdevice findable for the nvptx code generator during a GPU build.

    TVM links libdevice (bitcode for expf etc.) into the PTX, so a build needs it, although the
    board does not. It comes from $CUDA_PATH when that holds nvvm/libdevice, else from the pip
    package nvidia-cuda-nvcc-cu12, shown to TVM as a minimal toolkit folder (CUDA_PATH is set
    for the build only).

    Raises:
        ExportError: neither is available.
    """
    if _has_libdevice(os.environ.get("CUDA_PATH")):
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
    previous = os.environ.get("CUDA_PATH")
    with tempfile.TemporaryDirectory(prefix="lbdeploy-cuda-") as root:
        (Path(root) / "nvvm").mkdir()
        (Path(root) / "nvvm" / "libdevice").symlink_to(libdevice)
        (Path(root) / "version.txt").write_text(f"CUDA Version {version}\n")
        os.environ["CUDA_PATH"] = root
        try:
            yield
        finally:
            if previous is None:
                del os.environ["CUDA_PATH"]
            else:
                os.environ["CUDA_PATH"] = previous


def static_shapes(model, batch: int) -> dict[str, list[int]]:
    """Input name -> static shape, with a symbolic batch dimension set to `batch`.

    Raises:
        ExportError: a dimension other than the batch is symbolic.
    """
    shapes = {}
    initializers = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = []
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            elif axis == 0:
                dims.append(batch)
            else:
                raise ExportError(
                    f"input {value.name!r} has a symbolic dimension {axis} ({dim.dim_param!r}); the TVM "
                    "backend needs a fixed input size: export with a fixed --input-size"
                )
        shapes[value.name] = dims
    return shapes


def build(model, preset, batch: int = 1):
    """Import and compile an ONNX ModelProto for `preset`; returns the TVM executable.

    Args:
        model: the onnx.ModelProto.
        preset: an exporters.tvm.targets.TVMPreset.
        batch: the batch size compiled in (a symbolic batch dimension is fixed to it).
    Raises:
        ExportError: unsupported ops, or a build the target cannot take.
    """
    import tvm

    from lbdeploy.exporters.tvm.importer import import_onnx

    mod = import_onnx(model, static_shapes(model, batch), gpu=preset.gpu, vector_floats=preset.vector_floats,
                      vector_registers=preset.vector_registers)
    target = preset.tvm_target()
    with _cuda_libdevice() if preset.gpu else contextlib.nullcontext():
        return tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target, preset))


def export_module(executable, preset, path: Path) -> None:
    """Link `executable` into the shared library `path` with the preset's compiler.

    For GPU presets the PTX inside is then given its kernel entry points (kernel_entries.py).

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
    if preset.gpu:
        from lbdeploy.exporters.tvm.kernel_entries import mark_library_kernels

        mark_library_kernels(path)


def io_names(model) -> tuple[list[str], list[str]]:
    """The graph's real inputs (initializers excluded) and outputs, in order."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    return inputs, [o.name for o in model.graph.output]


def compile_artifact(onnx_path, board: Target, out_dir, batch: int = 1) -> dict:
    """Compile `onnx_path` for the target record `board` into `out_dir`/tvm/model.so.

    Args:
        onnx_path: the exported model.onnx (TernaryConv nodes allowed).
        board: the resolved target record (lbdeploy.targets), one TVM compiles for (`lbdeploy targets`).
        out_dir: the artifact folder being written.
        batch: the batch size compiled in (the runtime splits larger batches).
    Returns:
        The manifest fragment {"tvm": {"module", "target_preset", "target", "arch", "device",
        "gpu", "batch", "inputs", "input_shapes", "outputs", "tvm_version", "compile_seconds"}}.
    Raises:
        ConfigError: unknown target. ExportError: import, build or link failed.
    """
    import onnx
    import tvm

    from lbdeploy.exporters.tvm.targets import tvm_preset

    preset = tvm_preset(board)
    model = onnx.load(str(onnx_path))
    started = time.perf_counter()
    executable = build(model, preset, batch)
    export_module(executable, preset, Path(out_dir) / MODULE_PATH)
    inputs, outputs = io_names(model)
    return {
        "tvm": {
            "module": MODULE_PATH,
            "target_preset": preset.name,
            "target": preset.target,
            "arch": preset.arch,
            "device": "cuda" if preset.gpu else "cpu",
            "gpu": preset.gpu,
            "batch": batch,
            "inputs": inputs,
            "input_shapes": static_shapes(model, batch),
            "outputs": outputs,
            "tvm_version": tvm.__version__,
            "compile_seconds": round(time.perf_counter() - started, 1),
        },
    }
