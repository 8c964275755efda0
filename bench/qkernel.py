"""QTernaryConv (libternary_ort.so) vs ONNX Runtime's int8 QLinearConv (per-channel), side by side,
both channels-last: the form each takes inside an int8 network exported for ONNX Runtime.

Same method as bench/kernel.py: both ops run the same shape in one process, timed interleaved,
with `session.force_spinning_stop=1`. The QLinearConv gets the same ternary weights as int8 with a
per-channel weight scale (= TernaryConv's scale) and the same input/output quantization, i.e. the
dense int8 conv ONNX Runtime would run for this layer (u8 activations, s8 weights). Both models take
and give NHWC uint8: ours is QTernaryConv with layout NHWC; the dense one is
Transpose -> QLinearConv -> Transpose, which ONNX Runtime's layout optimizer turns into its
channels-last QLinearConv with no Transpose left (`optimized_node_counts` checks it). Targets from
issue 23: <= 0.80x at density 0.5, <= 0.35x at density 0.1.

    .venv/bin/python bench/qkernel.py                   # 128->128, 3x3, 64x64, batch 1, 2 threads
    .venv/bin/python bench/qkernel.py --threads 1 --repeats 100
"""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import numpy as np
from common import Comparison, ort_session
from kernel import main, side_by_side

TARGETS = {0.5: 0.80, 0.1: 0.35}


def _channels_last_qlinearconv(a: dict, cin: int, cout: int, size: int) -> bytes:
    """NHWC uint8 in and out: Transpose -> QLinearConv (the vector's weights as int8) -> Transpose."""
    from onnx import TensorProto, helper, numpy_helper

    x_scale, w_scale = float(a["x_scale"]), a["scale"].astype(np.float32)
    bias = np.rint(a["bias"] / (x_scale * w_scale)).astype(np.int32)
    constants = {"x_scale": a["x_scale"], "x_zero_point": a["x_zero_point"], "W": a["w"],
                 "w_scale": w_scale, "w_zero_point": np.zeros(cout, np.int8), "y_scale": a["y_scale"],
                 "y_zero_point": a["y_zero_point"], "B": bias}
    nodes = [helper.make_node("Transpose", ["X"], ["x_nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("QLinearConv", ["x_nchw", *list(constants)[:7], "B"], ["y_nchw"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["y_nchw"], ["Y"], perm=[0, 2, 3, 1])]
    graph = helper.make_graph(
        nodes, "bench", [helper.make_tensor_value_info("X", TensorProto.UINT8, (1, size, size, cin))],
        [helper.make_tensor_value_info("Y", TensorProto.UINT8, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def optimized_node_counts(model: bytes, library: str | None = None) -> collections.Counter:
    """Node counts ("domain:op_type") of the graph ONNX Runtime runs for `model` (all optimizations)."""
    import onnx
    import onnxruntime as ort

    from lbdeploy.runtime.backends.ort import session_options

    with tempfile.TemporaryDirectory(prefix="lbdeploy-opt-") as tmp:
        options = session_options(1, library)
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    return collections.Counter(f"{node.domain}:{node.op_type}" for node in graph.node)


def qsessions(cin: int, cout: int, size: int, density: float, threads: int, library: str, seed: int = 0):
    """(QTernaryConv session, QLinearConv session, uint8 NHWC input) for one 3x3, pad 1 layer."""
    from lbdeploy.ops.qvectors import QVectorCase, generate, vector_model

    case = QVectorCase("bench", n=1, cin=cin, cout=cout, h=size, w=size, density=density, seed=seed)
    a = generate(case)
    ternary = vector_model(case, a, layout="NHWC").SerializeToString()
    dense = _channels_last_qlinearconv(a, cin, cout, size)
    left = {op: n for op, n in optimized_node_counts(dense).items() if op.endswith(":Transpose")}
    if left:
        raise RuntimeError(f"ONNX Runtime kept {left} around its QLinearConv: not the channels-last form")
    x = np.ascontiguousarray(a["x"].transpose(0, 2, 3, 1))
    return ort_session(ternary, threads, library), ort_session(dense, threads), x


def qkernel_comparisons(densities, threads: int, repeats: int, library: str, cin: int = 128, cout: int = 128,
                        size: int = 64) -> list[Comparison]:
    """QTernaryConv vs channels-last QLinearConv at each density, one `Comparison` per density."""
    return side_by_side(qsessions, "QTernaryConv NHWC d={density:g} vs QLinearConv NHWC {cin}->{cout} {size}x{size}",
                        TARGETS, densities, threads, repeats, library, cin, cout, size)


if __name__ == "__main__":
    main(qkernel_comparisons, __doc__)
