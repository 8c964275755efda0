"""A tiny ONNX person detector for the synthetic scenes (lbdeploy.data.scenes), in MMDeploy's layout.

It is a real ONNX graph run by the same `OnnxDetector` as a user's detector, but it finds people
only by the scenes' known cue: every pixel that differs from the flat background colour belongs to
a person, and people never share a column range. The graph takes the foreground mask, closes gaps
of less than GAP_COLUMNS columns in its column profile (a hand held away from the body), splits the
profile into runs (one run = one person), and takes each run's first and last foreground
rows, giving `dets` [K, 5] (x1, y1, x2, y2, score 1) and `labels` [K] (all 0, "person"). It is
useless on photographs; it exists so tests and bench/tracking.py can score detection -> pose ->
tracking against exact truth where OpenCV's HOG detector (trained on real pedestrians) sees no one.

    path = write_scene_detector(tmp_path / "scene_det.onnx")   # also writes scene_det.json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lbdeploy.data.scenes import BACKGROUND

# A pixel is foreground when one channel differs from the background by more than this (0..255).
FOREGROUND_THRESHOLD = 24.0
# Column gaps narrower than this inside one figure are closed (odd: a centred max-pool window).
GAP_COLUMNS = 9
# x1, y1, x2, y2 of each run as int64 tensors of the graph, then the float columns of `dets`.
EDGES = ("starts", "top", "ends_after", "bottom_after")
DET_COLUMNS = tuple(f"{name}_f" for name in EDGES) + ("score",)


def scene_detector_model():
    """The detector graph: image [1, 3, H, W] (0..255 RGB) -> dets [K, 5], labels [K]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name, value, dtype=np.float32):
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)

    n = helper.make_node
    nodes = [
        n("Sub", ["image", "background"], ["delta"]), n("Abs", ["delta"], ["distance"]),
        n("ReduceMax", ["distance", "axis1"], ["strongest"], keepdims=0),                    # [1, H, W]
        n("Greater", ["strongest", "threshold"], ["mask_bool"]),
        n("Cast", ["mask_bool"], ["mask3"], to=TensorProto.FLOAT),
        n("Squeeze", ["mask3", "axis0"], ["mask"]),                                         # [H, W]
        n("ReduceMax", ["mask", "axis0"], ["profile"], keepdims=1),                         # [1, W]
        n("Unsqueeze", ["profile", "axis0"], ["profile3"]),                                 # [1, 1, W]
        n("MaxPool", ["profile3"], ["dilated"], kernel_shape=[GAP_COLUMNS], pads=[GAP_COLUMNS // 2] * 2),
        n("Neg", ["dilated"], ["dilated_neg"]),
        n("MaxPool", ["dilated_neg"], ["eroded_neg"], kernel_shape=[GAP_COLUMNS], pads=[GAP_COLUMNS // 2] * 2),
        n("Neg", ["eroded_neg"], ["closed"]),
        n("Reshape", ["closed", "flat"], ["columns"]),                                      # [W]
        n("Pad", ["columns", "pad_before"], ["columns_padded"]),                             # [W + 2]
        n("Slice", ["columns_padded", "zero", "minus2", "axis0"], ["left"]),
        n("Slice", ["columns_padded", "two", "big", "axis0"], ["right"]),
        n("Greater", ["columns", "left"], ["starts_bool"]), n("Greater", ["columns", "right"], ["ends_bool"]),
        n("NonZero", ["starts_bool"], ["starts2"]), n("Squeeze", ["starts2", "axis0"], ["starts"]),
        n("NonZero", ["ends_bool"], ["ends2"]), n("Squeeze", ["ends2", "axis0"], ["ends"]),
        n("Add", ["ends", "one_int"], ["ends_after"]),
        n("CumSum", ["mask", "axis1"], ["cumulative"]),
        n("Pad", ["cumulative", "pad_left_column"], ["cumulative_padded"]),                 # [H, W + 1]
        n("Gather", ["cumulative_padded", "ends_after"], ["upto_end"], axis=1),             # [H, K]
        n("Gather", ["cumulative_padded", "starts"], ["before_start"], axis=1),
        n("Sub", ["upto_end", "before_start"], ["row_counts"]),
        n("Greater", ["row_counts", "half"], ["rows_bool"]), n("Cast", ["rows_bool"], ["rows"], to=TensorProto.FLOAT),
        n("ArgMax", ["rows"], ["top"], axis=0, keepdims=0),
        n("ArgMax", ["rows"], ["bottom"], axis=0, keepdims=0, select_last_index=1),
        n("Add", ["bottom", "one_int"], ["bottom_after"]),
        *[n("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT) for name in EDGES],
        n("Mul", ["starts_f", "zero_f"], ["zeros_f"]), n("Add", ["zeros_f", "one_f"], ["score"]),
        *[n("Unsqueeze", [column, "axis1"], [f"{column}_col"]) for column in DET_COLUMNS],
        n("Concat", [f"{column}_col" for column in DET_COLUMNS], ["dets"], axis=1),
        n("Mul", ["starts", "zero_int"], ["labels"]),
    ]
    initializers = [
        const("background", np.array(BACKGROUND, dtype=np.float32).reshape(1, 3, 1, 1)),
        const("threshold", FOREGROUND_THRESHOLD), const("half", 0.5), const("zero_f", 0.0), const("one_f", 1.0),
        const("axis0", [0], np.int64), const("axis1", [1], np.int64),
        const("pad_before", [1, 1], np.int64), const("pad_left_column", [0, 1, 0, 0], np.int64),
        const("zero", [0], np.int64), const("flat", [-1], np.int64), const("two", [2], np.int64),
        const("minus2", [-2], np.int64),
        const("big", [2 ** 62], np.int64), const("one_int", 1, np.int64), const("zero_int", 0, np.int64),
    ]
    graph = helper.make_graph(
        nodes, "scene_person_detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("dets", TensorProto.FLOAT, ["K", 5]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, ["K"])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def write_scene_detector(path) -> Path:
    """Write the detector to `path` (.onnx) and its preprocessing (0..255 RGB, no mean/std) to PATH.json."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(scene_detector_model().SerializeToString())
    path.with_suffix(".json").write_text(json.dumps({"mean": [0, 0, 0], "std": [1, 1, 1], "color": "RGB"}))
    return path
