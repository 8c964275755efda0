"""Shared QTernaryConv test vectors: every quantized kernel runs the same named cases.

Same mechanism as `lbdeploy.ops.vectors` (whose `load` and `write_all` this reuses): each case is
generated from a seed by the reference (`lbdeploy.ops.qternary_conv`) and stored as
`tests/vectors/quantized/q_<name>.npz` with arrays x (uint8), x_scale, x_zero_point, w (int8),
w_packed (uint8), scale, bias, y_scale, y_zero_point, acc (the exact int64 sums), y (uint8) and
the JSON string `attrs`. They sit in a sub-folder so that the float TernaryConv suites, which run
every `tests/vectors/*.npz`, do not pick them up. Regenerate with
`python -m lbdeploy.ops.qvectors`; a test checks the stored files equal what the reference gives.

To add a case, append a `QVectorCase` to CASES and regenerate.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lbdeploy.ops.qternary_conv import MAX_K, accumulate, check_attrs, requantize
from lbdeploy.ops.ternary_conv import pack_ternary
from lbdeploy.ops.vectors import VectorCase, load, write_all

FOLDER = Path(__file__).resolve().parents[2] / "tests" / "vectors" / "quantized"


@dataclass(frozen=True)
class QVectorCase(VectorCase):
    """One QTernaryConv configuration: TernaryConv's geometry plus the quantization.

    x_value: -1 for random uint8 inputs, else every input equals it. worst_case: output channel o
    gets all +1 weights (o even) or all -1 (o odd), and bias cancels the sum so that the exact
    result is y = 100 (any error in the sum saturates). spread: the real outputs' range covers
    spread * 256 steps of y_scale, so spread > 1 saturates at both ends. fixed: (x_scale, y_scale,
    scale, bias) given exactly, every weight +1 and X = 1, 2, ... (or x_value): the rounding repros.
    """

    x_zero_point: int = 128
    y_zero_point: int = 128
    x_value: int = -1
    worst_case: bool = False
    spread: float = 1.25
    fixed: tuple = ()


CASES = (
    QVectorCase("q_basic_3x3", n=1, cin=16, cout=16, h=8, w=8),
    QVectorCase("q_zero_points_0", n=1, cin=8, cout=8, h=7, w=9, x_zero_point=0, y_zero_point=0),
    QVectorCase("q_odd_zero_points", n=1, cin=5, cout=7, h=7, w=11, x_zero_point=37, y_zero_point=211),
    QVectorCase("q_relu", n=2, cin=16, cout=16, h=8, w=8, activation="relu", y_zero_point=40),
    QVectorCase("q_relu_y_zero_point_0", n=1, cin=12, cout=8, h=6, w=6, activation="relu", y_zero_point=0),
    QVectorCase("q_stride2", n=1, cin=16, cout=8, h=9, w=10, stride=2, x_zero_point=90),
    QVectorCase("q_groups_4", n=1, cin=16, cout=8, h=6, w=6, group=4),
    QVectorCase("q_kernel_5x5_pad2", n=1, cin=8, cout=8, h=9, w=9, k=5, pad=2, x_zero_point=200),
    QVectorCase("q_kernel_1x1", n=1, cin=24, cout=16, h=5, w=7, k=1, pad=0),
    QVectorCase("q_dilation2_no_pad", n=1, cin=8, cout=8, h=10, w=10, dilation=2, pad=0),
    QVectorCase("q_density_0.1", n=1, cin=32, cout=16, h=8, w=8, density=0.1),
    QVectorCase("q_saturation", n=1, cin=16, cout=12, h=8, w=8, spread=4.0, y_zero_point=100),
    QVectorCase("q_batch_3", n=3, cin=8, cout=8, h=6, w=5),
    QVectorCase("q_all_zero_filters", n=1, cin=8, cout=8, h=5, w=5, zero_filters=3),
    QVectorCase("q_wide_128", n=1, cin=128, cout=128, h=16, w=16, activation="relu", y_zero_point=10, seed=7),
    # The largest sums the kernels accept: K = 4096 * 4 * 4 = MAX_K taps of 255 (and -255).
    QVectorCase("q_worst_case_max_k", n=1, cin=MAX_K // 16, cout=4, h=4, w=4, k=4, pad=0, x_value=255,
                x_zero_point=0, y_zero_point=0, worst_case=True),
    # The same with a 3x3 kernel: K = 7281 * 9 = 65529, 2x2 outputs.
    QVectorCase("q_worst_case_3x3", n=1, cin=MAX_K // 9, cout=6, h=4, w=4, k=3, pad=0, x_value=255,
                x_zero_point=0, y_zero_point=0, worst_case=True),
    # m = fl32(fl32(3 * 0.1) / 0.6) is just above 0.5, so 1.5, 2.5, ... round up (float64 m: down).
    QVectorCase("q_round_m_float32", n=1, cin=1, cout=1, h=1, w=9, k=1, pad=0, x_zero_point=0, y_zero_point=0,
                fixed=(0.1, 0.6, 3.0, 0.0)),
    # 26 * 2623.6807 - 68115.195 = 100.50195 exactly: one rounding gives 101 (m * acc rounded first: 100).
    QVectorCase("q_round_fused_multiply_add", n=1, cin=1, cout=1, h=1, w=1, k=1, pad=0, x_value=26,
                x_zero_point=0, y_zero_point=0, fixed=(1.0, 1.0, 2623.6807, -68115.195)),
)


def generate(case: QVectorCase) -> dict[str, np.ndarray]:
    """Inputs, exact sums and the reference output of `case` (deterministic in its seed)."""
    attrs = check_attrs(case.attrs())
    rng = np.random.default_rng(case.seed + 2000)
    cin_g = case.cin // case.group
    x_shape = (case.n, case.cin, case.h, case.w)
    if case.x_value >= 0:
        x = np.full(x_shape, case.x_value, np.uint8)
    elif case.fixed:
        x = (np.arange(np.prod(x_shape)) % 255 + 1).astype(np.uint8).reshape(x_shape)
    else:
        x = rng.integers(0, 256, x_shape, dtype=np.uint8)
    shape = (case.cout, cin_g, case.k, case.k)
    if case.fixed:
        w = np.ones(shape, np.int8)
    elif case.worst_case:
        w = np.where(np.arange(case.cout) % 2 == 0, 1, -1)[:, None, None, None] * np.ones(shape, np.int8)
    else:
        w = (rng.random(shape) < case.density) * np.where(rng.random(shape) < 0.5, -1, 1)
    w = w.astype(np.int8)
    w[: case.zero_filters] = 0
    x_zp, y_zp = np.uint8(case.x_zero_point), np.uint8(case.y_zero_point)
    acc = accumulate(x, x_zp, w, attrs)
    if case.fixed:
        x_scale, y_scale = np.float32(case.fixed[0]), np.float32(case.fixed[1])
        scale = np.full(case.cout, case.fixed[2], np.float32)
        bias = np.full(case.cout, case.fixed[3], np.float32)
    elif case.worst_case:
        x_scale, y_scale = np.float32(1.0), np.float32(1.0)
        scale = np.ones(case.cout, np.float32)
        bias = (100.0 - acc[0, :, 0, 0]).astype(np.float32)  # exact: |acc| < 2^24
    else:
        x_scale = np.float32(0.02)
        scale = rng.uniform(0.5, 1.5, case.cout).astype(np.float32)
        bias = rng.uniform(-0.5, 0.5, case.cout).astype(np.float32)
        real = scale[None, :, None, None].astype(np.float64) * float(x_scale) * acc + bias[None, :, None, None]
        y_scale = np.float32(max(float(np.ptp(real)), 1e-3) / (case.spread * 256))
    y = requantize(acc, x_scale, scale, bias, y_scale, y_zp, attrs.activation)
    return {
        "x": x, "x_scale": x_scale, "x_zero_point": x_zp,
        "w": w, "w_packed": pack_ternary(w), "scale": scale, "bias": bias,
        "y_scale": y_scale, "y_zero_point": y_zp, "acc": acc, "y": y,
        "attrs": np.array(json.dumps(asdict(case))),
    }


def load_case(path: Path) -> tuple[QVectorCase, dict[str, np.ndarray]]:
    """Read one stored q_ vector file back as (case, arrays)."""
    return load(path, QVectorCase)


def stored_paths() -> list[Path]:
    """The stored q_ vector files, sorted by name."""
    return sorted(FOLDER.glob("q_*.npz"))


def inputs_of(arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The op's eight inputs of a vector, in QTernaryConv order (W packed)."""
    return [arrays[name] for name in ("x", "x_scale", "x_zero_point", "w_packed", "scale", "bias",
                                      "y_scale", "y_zero_point")]


def vector_model(case: QVectorCase, arrays: dict[str, np.ndarray], batch: int | str | None = None,
                 layout: str = "NCHW"):
    """A one-node QTernaryConv ONNX model of a vector: input X (batch dim `batch`, default the case's
    N), every other input a constant initializer, output Y with unknown spatial dims; with layout
    "NHWC" the node is channels-last and so are X and Y. Needs onnx."""
    from onnx import TensorProto, helper, numpy_helper

    from lbdeploy.ops.qonnx_schema import make_node, register_schema
    from lbdeploy.ops.qternary_conv import INPUTS, OP_VERSION
    from lbdeploy.ops.ternary_conv import DOMAIN

    register_schema()
    batch = case.n if batch is None else batch
    x_dims = [batch, case.h, case.w, case.cin] if layout == "NHWC" else [batch, case.cin, case.h, case.w]
    x_info = helper.make_tensor_value_info("X", TensorProto.UINT8, x_dims)
    y_info = helper.make_tensor_value_info("Y", TensorProto.UINT8, [batch, None, None, None])
    constants = dict(zip(INPUTS[1:], inputs_of(arrays)[1:]))
    graph = helper.make_graph(
        [make_node(list(INPUTS), ["Y"], case.attrs(), name=case.name, layout=layout)], case.name, [x_info], [y_info],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()],
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, OP_VERSION)]
    return helper.make_model(graph, opset_imports=opsets)


if __name__ == "__main__":
    for p in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER, CASES, generate):
        print(p)
