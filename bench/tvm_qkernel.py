"""TVM's QTernaryConv kernel vs our ONNX Runtime QTernaryConv (libternary_ort.so), side by side.

Same method as bench/kernel.py and bench/qkernel.py: one QTernaryConv layer (the shared q_ vector
generator, 128->128 3x3 pad 1 64x64 by default) is compiled with the TVM backend for this machine
(x86 preset) and run with ONNX Runtime and our kernel library, in one process, timed interleaved,
both with the same threads (`session.force_spinning_stop=1` on ORT). The outputs are checked to
agree within the op's tolerance first. Target (issue 19): TVM within 1.5x of ORT.

    .venv/bin/python bench/tvm_qkernel.py                     # densities 0.1 and 0.5, 2 threads
    .venv/bin/python bench/tvm_qkernel.py --threads 1 --repeats 100
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import compare, format_comparison, header, interleaved_times, ort_session, progress, session_runner

TARGET = 1.5  # TVM / ORT


def tvm_uint8_runner(onnx_path: Path, work: Path, threads: int, x: np.ndarray):
    """Compile `onnx_path` (uint8 input) with the TVM backend (x86) in `work`; a no-argument runner
    returning the uint8 output. Calls the module's VM directly: `TVMBackend.run` feeds float32."""
    import tvm

    from lbdeploy.exporters.tvm.compile import compile_artifact
    from lbdeploy.targets import get_target
    from lbdeploy.runtime.backends.tvm import TVMBackend

    progress(f"compiling {onnx_path.name} with TVM (x86)")
    backend = TVMBackend(work, compile_artifact(onnx_path, get_target("x86"), work), threads=threads)
    tensor = tvm.runtime.tensor(x, backend.device)
    main = backend.vm["main"]
    return lambda: main(tensor).numpy()


def tvm_qkernel_comparison(density: float, threads: int, repeats: int, library: str, work: Path,
                           cin: int = 128, cout: int = 128, size: int = 64):
    """One `Comparison` (TVM vs ORT) of a QTernaryConv layer at `density`.

    Raises:
        AssertionError: the two engines disagree beyond the op's tolerance.
    """
    from lbdeploy.ops.qternary_conv import QKERNEL_TOLERANCE
    from lbdeploy.ops.qvectors import QVectorCase, generate, vector_model

    case = QVectorCase("bench", n=1, cin=cin, cout=cout, h=size, w=size, density=density, seed=0)
    arrays = generate(case)
    path = work / f"q_{density:g}.onnx"
    path.write_bytes(vector_model(case, arrays).SerializeToString())
    session = ort_session(str(path), threads, library)
    runners = {"tvm": tvm_uint8_runner(path, work / f"tvm_{density:g}", threads, arrays["x"]),
               "ort": session_runner(session, {"X": arrays["x"]})}
    diff = np.abs(runners["tvm"]().astype(int) - runners["ort"]()[0].astype(int)).max()
    assert diff <= QKERNEL_TOLERANCE, f"TVM and ORT differ by {diff} steps"
    times = interleaved_times(runners, repeats, warmup=5)
    name = f"TVM vs ORT QTernaryConv d={density:g} {cin}->{cout} {size}x{size}"
    return compare("kernel", name, times, "tvm", "ort", TARGET, density=density)


def main() -> None:
    from lbdeploy.kernels.build import build_ort_library

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cin", type=int, default=128)
    parser.add_argument("--cout", type=int, default=128)
    parser.add_argument("--size", type=int, default=64, help="input height = width")
    parser.add_argument("--threads", type=int, default=2, help="threads of each engine")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--library", default=None, help="libternary_ort.so to use (default: build for this host)")
    args = parser.parse_args()
    library = args.library or str(build_ort_library())
    print(f"batch 1, pad 1, {args.threads} threads; wall clock, median (min) of interleaved runs; "
          "the target applies to the median ratio")
    print(header(cpu=args.threads == 1))
    with tempfile.TemporaryDirectory(prefix="tvm-qkernel-") as tmp:
        for density in args.densities:
            comparison = tvm_qkernel_comparison(density, args.threads, args.repeats, library, Path(tmp),
                                                args.cin, args.cout, args.size)
            print(format_comparison(comparison, cpu=args.threads == 1))


if __name__ == "__main__":
    main()
