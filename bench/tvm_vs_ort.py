"""TVM vs ONNX Runtime latency on the same exported model, side by side.

    python bench/tvm_vs_ort.py --model lbrn-s --stacks 8 --size 256 --repeats 20

Exports the model once (ONNX with TernaryConv nodes), runs it with ONNX Runtime (our kernel
library) and compiles it with the TVM backend for this machine (x86 preset), checks both agree,
then times them interleaved (ORT, TVM, ORT, TVM, ...) so that machine load hits both alike, and
prints medians and the TVM/ORT ratio. Both use --threads threads; neither engine's pool spins
between calls (bench/common.py), as both share the cores. bench/run.py includes the TVM backend
in its end-to-end group; this script is the quick two-engine view for any zoo model.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from common import compare, format_comparison, header, interleaved_times, ort_session, progress, session_runner
from models import export_network, tvm_runner


def main() -> None:
    from lbdeploy.kernels.build import build_ort_library

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lbrn-s", help="a pose preset of the zoo")
    parser.add_argument("--stacks", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tvm-vs-ort-") as tmp:
        work = Path(tmp)
        progress(f"exporting {args.model}, {args.stacks} stacks, {args.size}x{args.size}")
        path = export_network(args.model, work / "model.onnx", size=args.size, stacks=args.stacks)
        x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
        session = ort_session(path, args.threads, str(build_ort_library()))
        runners = {"ort": session_runner(session, {session.get_inputs()[0].name: x}),
                   "tvm": tvm_runner(path, work / "tvm", args.threads, x)}
        final = session.get_outputs()[-1].name
        ort_final, tvm_final = runners["ort"]()[-1], runners["tvm"]()[final]
        scale = float(np.abs(ort_final).max()) or 1.0
        diff = float(np.abs(tvm_final - ort_final).max())
        print(f"max |TVM - ORT| on {final}: {diff:.2e} ({diff / scale:.1e} of max |ORT|)")
        times = interleaved_times(runners, args.repeats, warmup=1)
        print(header())
        print(format_comparison(compare("e2e", f"{args.model} TVM vs ORT", times, "tvm", "ort")))


if __name__ == "__main__":
    main()
