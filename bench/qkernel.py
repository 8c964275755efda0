"""QTernaryConv (libternary_ort.so) vs ONNX Runtime's int8 QLinearConv (per-channel), side by side.

Same method as bench/kernel.py: both ops run the same shape in one process, timed interleaved,
with `session.force_spinning_stop=1`. The QLinearConv gets the same ternary weights as int8 with a
per-channel weight scale (= TernaryConv's scale) and the same input/output quantization, i.e. the
dense int8 conv ONNX Runtime would run for this layer (u8 activations, s8 weights). Targets from
issue 19: <= 0.60x at density 0.5, <= 0.25x at density 0.1.

    .venv/bin/python bench/qkernel.py                   # 128->128, 3x3, 64x64, batch 1, 2 threads
    .venv/bin/python bench/qkernel.py --threads 1 --repeats 100
"""

from __future__ import annotations

import numpy as np
from common import Comparison, ort_session
from kernel import main, one_node_model, side_by_side

TARGETS = {0.5: 0.60, 0.1: 0.25}


def qsessions(cin: int, cout: int, size: int, density: float, threads: int, library: str, seed: int = 0):
    """(QTernaryConv session, QLinearConv session, uint8 input) for one 3x3, pad 1 layer."""
    from onnx import TensorProto, helper

    from lbdeploy.ops.qvectors import QVectorCase, generate, vector_model

    case = QVectorCase("bench", n=1, cin=cin, cout=cout, h=size, w=size, density=density, seed=seed)
    a = generate(case)
    ternary = vector_model(case, a).SerializeToString()
    x_scale, w_scale = float(a["x_scale"]), a["scale"].astype(np.float32)
    bias = np.rint(a["bias"] / (x_scale * w_scale)).astype(np.int32)
    constants = {"x_scale": a["x_scale"], "x_zero_point": a["x_zero_point"], "W": a["w"],
                 "w_scale": w_scale, "w_zero_point": np.zeros(cout, np.int8), "y_scale": a["y_scale"],
                 "y_zero_point": a["y_zero_point"], "B": bias}
    node = helper.make_node("QLinearConv", ["X", *list(constants)[:7], "B"], ["Y"], kernel_shape=[3, 3],
                            pads=[1, 1, 1, 1])
    dense = one_node_model(node, (1, cin, size, size), constants, [("", 17)], elem_type=TensorProto.UINT8)
    return ort_session(ternary, threads, library), ort_session(dense, threads), a["x"]


def qkernel_comparisons(densities, threads: int, repeats: int, library: str, cin: int = 128, cout: int = 128,
                        size: int = 64) -> list[Comparison]:
    """QTernaryConv vs QLinearConv at each density, one `Comparison` per density."""
    return side_by_side(qsessions, "QTernaryConv d={density:g} vs QLinearConv {cin}->{cout} {size}x{size}", TARGETS,
                        densities, threads, repeats, library, cin, cout, size)


if __name__ == "__main__":
    main(qkernel_comparisons, __doc__)
