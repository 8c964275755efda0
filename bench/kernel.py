"""TernaryConv (ONNX Runtime + libternary_ort.so) vs ONNX Runtime's dense fp32 Conv, side by side.

Both ops run on the same shape in one process, timed interleaved (one TernaryConv run, one Conv
run, repeat) so machine noise hits both alike; prints medians and the time ratio with the
project's targets (issue 6: <= 0.50x at density 0.5, <= 0.20x at density 0.1).

    .venv/bin/python bench/kernel.py                    # 128->128, 3x3, 64x64, batch 1, 2 threads
    .venv/bin/python bench/kernel.py --threads 1 --repeats 100
    LBDEPLOY_KERNEL=reference .venv/bin/python bench/kernel.py --repeats 5   # the simple path
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from lbdeploy.kernels.build import build_ort_library
from lbdeploy.ops.onnx_schema import make_node
from lbdeploy.ops.ternary_conv import DOMAIN, TernaryConvAttrs, pack_ternary

TARGETS = {0.5: 0.50, 0.1: 0.20}


def _model(node: onnx.NodeProto, x_shape, initializers, opsets) -> bytes:
    graph = helper.make_graph(
        [node], "bench", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets]).SerializeToString()


def _session(model: bytes, threads: int, library: str | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.force_spinning_stop", "1")
    if library:
        options.register_custom_ops_library(library)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def sessions(cin: int, cout: int, size: int, density: float, threads: int, library: str, seed: int = 0):
    """(ternary session, dense Conv session, input) for one 3x3, pad 1 layer."""
    rng = np.random.default_rng(seed)
    shape = (cout, cin, 3, 3)
    w = ((rng.random(shape) < density) * np.where(rng.random(shape) < 0.5, -1, 1)).astype(np.int8)
    scale = rng.uniform(0.5, 1.5, cout).astype(np.float32)
    bias = rng.uniform(-0.5, 0.5, cout).astype(np.float32)
    attrs = TernaryConvAttrs(kernel_shape=(3, 3), pads=(1, 1, 1, 1))
    x_shape = (1, cin, size, size)
    ternary = _model(
        make_node(["X", "W", "scale", "bias"], ["Y"], attrs), x_shape,
        {"W": pack_ternary(w), "scale": scale, "bias": bias}, [("", 17), (DOMAIN, 1)],
    )
    dense_w = (w.astype(np.float32) * scale[:, None, None, None]).astype(np.float32)
    dense = _model(
        helper.make_node("Conv", ["X", "W", "B"], ["Y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), x_shape,
        {"W": dense_w, "B": bias}, [("", 17)],
    )
    x = rng.standard_normal(x_shape).astype(np.float32)
    return _session(ternary, threads, library), _session(dense, threads, None), x


def interleaved_medians(first, second, feed: dict, repeats: int, warmup: int = 5) -> tuple[float, float]:
    """Median seconds of first.run and second.run, alternating the two calls."""
    for _ in range(warmup):
        first.run(None, feed)
        second.run(None, feed)
    times = ([], [])
    for _ in range(repeats):
        for session, bucket in zip((first, second), times):
            start = time.perf_counter()
            session.run(None, feed)
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cin", type=int, default=128)
    parser.add_argument("--cout", type=int, default=128)
    parser.add_argument("--size", type=int, default=64, help="input height = width")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--library", default=None, help="libternary_ort.so to use (default: build for this host)")
    args = parser.parse_args()
    library = args.library or str(build_ort_library())
    print(f"TernaryConv vs ONNX Runtime Conv: {args.cin}->{args.cout}, 3x3, pad 1, {args.size}x{args.size}, "
          f"batch 1, {args.threads} threads, onnxruntime {ort.__version__}")
    print(f"{'density':>8} {'ternary ms':>11} {'dense ms':>9} {'ratio':>7} {'target':>7}")
    for density in args.densities:
        ternary, dense, x = sessions(args.cin, args.cout, args.size, density, args.threads, library)
        t_ternary, t_dense = interleaved_medians(ternary, dense, {"X": x}, args.repeats)
        target = TARGETS.get(density)
        ratio = t_ternary / t_dense
        verdict = "" if target is None else (f"<= {target:.2f}" + (" ok" if ratio <= target else " MISSED"))
        print(f"{density:>8.2f} {t_ternary * 1e3:>11.3f} {t_dense * 1e3:>9.3f} {ratio:>6.3f}x {verdict:>7}")


if __name__ == "__main__":
    main()
