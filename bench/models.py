"""The networks the benchmarks time, exported to ONNX through the project exporter.

- `export_block`: one residual block (dense bottleneck or LBB) folded by exporters.folding and
  traced like exporters.onnx does it, for a [1, C, H, W] feature-map input (export_onnx takes
  3-channel images only);
- `export_network`: a whole model of the zoo via exporters.onnx.export_onnx (no parity gate:
  randomly initialised 8-stack networks have exploding activations, irrelevant for timing);
- `quantize_int8`: ONNX Runtime static quantization (QDQ, per-channel, u8 activations / s8
  weights) calibrated on a few random images;
- `quantize_network`: a zoo model through the project's int8 export (exporters.quantize: QDQ,
  per-channel weights, TernaryConv -> QTernaryConv), calibrated on the images it is given;
- `tvm_runner`: compiles an exported model with the project's TVM backend (x86 preset).

Every function writes into a work folder given by the caller and returns paths or runners.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from common import progress

# Ops given int8 QDQ pairs; BatchNormalization (the unfoldable ones on the residual stream) stays fp32.
QUANTIZED_OPS = ["Conv", "Add", "MaxPool", "Resize"]


def export_block(variant: str, density: float, path: Path, channels: int = 256, mid: int = 128, size: int = 64,
                 seed: int = 0) -> Path:
    """Export one pre-activation bottleneck (`variant` of lbdeploy.models.blocks) for input [1, channels, size, size].

    Returns:
        `path` (model.onnx, TernaryConv custom op for ternary layers).
    Raises:
        ExportError: tracing or checking failed.
    """
    import torch

    from lbdeploy.exporters.folding import prepare_for_export
    from lbdeploy.exporters.onnx import trace_to_onnx
    from lbdeploy.errors import ExportError
    from lbdeploy.models.blocks import PreActBottleneck, block_layers
    from lbdeploy.models.ternary import init_ternary

    block = PreActBottleneck(channels, channels, mid, block_layers(variant, density))
    init_ternary(block, seed)
    wrapped = prepare_for_export(block.eval(), "custom")
    try:
        trace_to_onnx(wrapped, torch.zeros(1, channels, size, size), path, "x", ["y"],
                      ops="standard" if variant == "dense" else "custom", dynamic_batch=False)
    except ExportError as err:
        raise ExportError(f"exporting the {variant} block failed: {err}") from None
    return path


def export_network(arch: str, path: Path, ops: str = "custom", size: int = 256, task: str = "pose",
                   **overrides) -> Path:
    """Build zoo model `arch` (overrides e.g. stacks=8, density=0.1, backbone="resnet50") and export it to
    `path` with export_onnx (`task` names the outputs: "pose" or "saliency")."""
    from lbdeploy.exporters.onnx import export_onnx
    from lbdeploy.models import build_model

    model = build_model(arch, input_size=(size, size), **overrides)
    export_onnx(model, path, (size, size), task, ops=ops)
    return path


def quantize_int8(fp32_path: Path, out_path: Path, input_shape: tuple, calibration_images: int = 4) -> Path:
    """Static int8 quantization of a standard-ops model with ONNX Runtime (QDQ, per-channel weights).

    Calibration (MinMax) runs on `calibration_images` random inputs: the ranges only need to be
    plausible for timing, the accuracy of the int8 model is not measured here.

    Returns:
        `out_path`.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    class RandomImages(CalibrationDataReader):
        def __init__(self, input_name: str):
            rng = np.random.default_rng(0)
            self.feeds = iter([{input_name: rng.standard_normal(input_shape).astype(np.float32)}
                               for _ in range(calibration_images)])

        def get_next(self):
            return next(self.feeds, None)

    prepared = out_path.with_name(out_path.stem + ".pre.onnx")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # per-tensor chatter on the root logger
    try:
        quantize_static(str(prepared), str(out_path), RandomImages(input_name), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=QUANTIZED_OPS, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return out_path


def quantize_network(arch: str, path: Path, images: np.ndarray, method: str = "minmax", **overrides) -> Path:
    """Build zoo model `arch` (overrides e.g. stacks=8, density=0.1) at the size of `images` and write
    its int8 model.onnx to `path` with exporters.quantize.quantize_onnx (no accuracy gate: random weights)."""
    from lbdeploy.exporters.quantize import quantize_onnx
    from lbdeploy.models import build_model

    size = tuple(images.shape[2:])
    model = build_model(arch, input_size=size, **overrides).eval()
    quantize_onnx(model, path, size, "pose", images, method, opset=18)
    return path


def tvm_runner(onnx_path: Path, work: Path, threads: int, x: np.ndarray):
    """Compile `onnx_path` with the TVM backend (x86 preset) in `work`; returns a no-argument runner.

    Raises:
        BackendUnavailable: apache-tvm is not installed.
    """
    from lbdeploy.exporters.tvm.compile import compile_artifact
    from lbdeploy.targets import get_target
    from lbdeploy.runtime.backends.tvm import TVMBackend

    work.mkdir(parents=True, exist_ok=True)
    target = work / "model.onnx"
    if target != onnx_path:
        target.write_bytes(onnx_path.read_bytes())
    progress(f"compiling {onnx_path.name} with TVM (x86)")
    backend = TVMBackend(work, compile_artifact(target, get_target("x86"), work), threads=threads)
    feed = {backend.input_names[0]: x}
    return lambda: backend.run(feed)
