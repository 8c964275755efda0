"""Small hand-made artifacts for the runtime tests (no exporter, no torch needed).

`pool_model` is an ONNX graph whose "heatmaps" are the input's colour channels average-pooled by
the heatmap stride: a pure red dot in the image becomes the peak of joint 0, green of joint 1,
blue of joint 2. That makes crop -> model -> decode -> inverse affine checkable end to end.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

STRIDE = 4
JOINTS = ("red", "green", "blue")
# Colours do not change sides when the image is mirrored, so the pool model has no flip pairs.
FLIP_PAIRS = []


def pool_model(size=(64, 64), batch="N", extra_nodes=(), initializers=(), opset=18) -> onnx.ModelProto:
    """image [batch, 3, H, W] -> heatmaps_0 = -pool (not final), heatmaps_1 = pool (final).

    `extra_nodes` / `initializers` add dead-end nodes (e.g. a TernaryConv) to the graph.
    """
    h, w = size
    nodes = [
        helper.make_node("AveragePool", ["image"], ["heatmaps_1"], kernel_shape=[STRIDE, STRIDE], strides=[STRIDE, STRIDE]),
        helper.make_node("Neg", ["heatmaps_1"], ["heatmaps_0"]),
        *extra_nodes,
    ]
    out_shape = [batch, 3, h // STRIDE, w // STRIDE]
    graph = helper.make_graph(
        nodes, "pool_pose",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, h, w])],
        [helper.make_tensor_value_info("heatmaps_0", TensorProto.FLOAT, out_shape),
         helper.make_tensor_value_info("heatmaps_1", TensorProto.FLOAT, out_shape)],
        initializer=list(initializers),
    )
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(n.domain, 1) for n in extra_nodes if n.domain]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 10
    return model


def pool_manifest(size=(64, 64), batch="N") -> dict:
    """Manifest for `pool_model` (pixel values scaled to 0..1, no mean/std)."""
    h, w = size
    out = ["N" if batch == "N" else batch, 3, h // STRIDE, w // STRIDE]
    return {
        "format": "lbdeploy-artifact", "format_version": 1, "arch": "pool-test", "config": {"stacks": 2},
        "task": "pose",
        "input": {"name": "image", "shape": [batch, 3, h, w], "layout": "NCHW", "dtype": "float32", "color": "RGB",
                  "pixel_scale": 1.0 / 255.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        "outputs": [{"name": "heatmaps_0", "shape": out, "stack": 0, "final": False},
                    {"name": "heatmaps_1", "shape": out, "stack": 1, "final": True}],
        "pose": {"joints": list(JOINTS), "flip_pairs": FLIP_PAIRS, "skeleton": [[0, 2], [2, 1]], "heatmap_stride": STRIDE},
        "target": "x86", "backend": "ort", "ops": "standard", "opset": 18,
        "custom_ops": [], "kernel_library": None, "files": {},
    }


def write_artifact(folder: Path, model: onnx.ModelProto, manifest: dict, extra_files: dict | None = None) -> Path:
    """Write model.onnx, extra files (relative path -> bytes) and a manifest listing their sha256."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"model.onnx": model.SerializeToString(), **(extra_files or {})}
    for relative, data in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    manifest = {**manifest, "files": {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def dot_image(width: int, height: int, dots: dict, radius: int = 2) -> np.ndarray:
    """Black RGB image with a square dot of pure colour `channel` centred at each (x, y): {channel: (x, y)}."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for channel, (x, y) in dots.items():
        image[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1, channel] = 255
    return image
