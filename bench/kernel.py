"""TernaryConv (ONNX Runtime + libternary_ort.so) vs ONNX Runtime's dense fp32 Conv, side by side.

Both ops run on the same shape in one process, timed interleaved (one TernaryConv run, one Conv
run, repeat) so machine noise hits both alike; prints medians and the time ratio with the
project's targets (issue 6: <= 0.50x at density 0.5, <= 0.20x at density 0.1). bench/run.py
runs the same comparison as part of the whole suite.

    .venv/bin/python bench/kernel.py                    # 128->128, 3x3, 64x64, batch 1, 2 threads
    .venv/bin/python bench/kernel.py --threads 1 --repeats 100
    LBDEPLOY_KERNEL=reference .venv/bin/python bench/kernel.py --repeats 5   # the simple path
"""

from __future__ import annotations

import argparse

import numpy as np

from common import Comparison, compare, format_comparison, header, interleaved_times, ort_session, session_runner

TARGETS = {0.5: 0.50, 0.1: 0.20}


def one_node_model(node, x_shape, initializers, opsets, elem_type: int | None = None) -> bytes:
    """Serialized one-node model: input X of `x_shape`, output Y, both of `elem_type` (default float)."""
    from onnx import TensorProto, helper, numpy_helper

    elem_type = TensorProto.FLOAT if elem_type is None else elem_type
    graph = helper.make_graph(
        [node], "bench", [helper.make_tensor_value_info("X", elem_type, x_shape)],
        [helper.make_tensor_value_info("Y", elem_type, None)],
        initializer=[numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets]).SerializeToString()


def sessions(cin: int, cout: int, size: int, density: float, threads: int, library: str, seed: int = 0):
    """(ternary session, dense Conv session, input) for one 3x3, pad 1 layer with the same weights."""
    from onnx import helper

    from lbdeploy.ops.onnx_schema import make_node
    from lbdeploy.ops.ternary_conv import DOMAIN, TernaryConvAttrs, pack_ternary

    rng = np.random.default_rng(seed)
    shape = (cout, cin, 3, 3)
    w = ((rng.random(shape) < density) * np.where(rng.random(shape) < 0.5, -1, 1)).astype(np.int8)
    scale = rng.uniform(0.5, 1.5, cout).astype(np.float32)
    bias = rng.uniform(-0.5, 0.5, cout).astype(np.float32)
    attrs = TernaryConvAttrs(kernel_shape=(3, 3), pads=(1, 1, 1, 1))
    x_shape = (1, cin, size, size)
    ternary = one_node_model(
        make_node(["X", "W", "scale", "bias"], ["Y"], attrs), x_shape,
        {"W": pack_ternary(w), "scale": scale, "bias": bias}, [("", 17), (DOMAIN, 1)],
    )
    dense_w = (w.astype(np.float32) * scale[:, None, None, None]).astype(np.float32)
    dense = one_node_model(
        helper.make_node("Conv", ["X", "W", "B"], ["Y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), x_shape,
        {"W": dense_w, "B": bias}, [("", 17)],
    )
    x = rng.standard_normal(x_shape).astype(np.float32)
    return ort_session(ternary, threads, library), ort_session(dense, threads), x


def side_by_side(make_sessions, label, targets: dict, densities, threads: int, repeats: int, library: str,
                 cin: int = 128, cout: int = 128, size: int = 64) -> list[Comparison]:
    """Our op vs ONNX Runtime's dense op at each density, one `Comparison` per density.

    Args:
        make_sessions: (cin, cout, size, density, threads, library) -> (our session, dense session, input X).
        label: the comparison's name at a density, e.g. "TernaryConv d=0.5 vs Conv 128->128 3x3 64x64".
        targets: density -> target ratio.
    """
    results = []
    for density in densities:
        ternary, dense, x = make_sessions(cin, cout, size, density, threads, library)
        feed = {"X": x}
        times = interleaved_times({"ternary": session_runner(ternary, feed), "dense": session_runner(dense, feed)},
                                  repeats, warmup=5)
        results.append(compare("kernel", label.format(density=density, cin=cin, cout=cout, size=size), times,
                               "ternary", "dense", targets.get(density), density=density))
    return results


def kernel_comparisons(densities, threads: int, repeats: int, library: str, cin: int = 128, cout: int = 128,
                       size: int = 64) -> list[Comparison]:
    """TernaryConv vs dense Conv at each density, one `Comparison` per density."""
    return side_by_side(sessions, "TernaryConv d={density:g} vs Conv {cin}->{cout} 3x3 {size}x{size}", TARGETS,
                        densities, threads, repeats, library, cin, cout, size)


def main(comparisons=kernel_comparisons, description: str = __doc__) -> None:
    """The command line of a side-by-side kernel benchmark (this file's and bench/qkernel.py's)."""
    from lbdeploy.kernels.build import build_ort_library

    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--cin", type=int, default=128)
    parser.add_argument("--cout", type=int, default=128)
    parser.add_argument("--size", type=int, default=64, help="input height = width")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--library", default=None, help="libternary_ort.so to use (default: build for this host)")
    args = parser.parse_args()
    library = args.library or str(build_ort_library())
    print(f"batch 1, pad 1, {args.threads} threads; wall clock, median (min) of interleaved runs; "
          "the targets apply to the median ratio")
    print(header(cpu=args.threads == 1))
    for comparison in comparisons(args.densities, args.threads, args.repeats, library, args.cin, args.cout,
                                  args.size):
        print(format_comparison(comparison, cpu=args.threads == 1))


if __name__ == "__main__":
    main()
