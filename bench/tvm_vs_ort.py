"""TVM vs ONNX Runtime latency on the same exported model, side by side.

    python bench/tvm_vs_ort.py --model lbrn-s --stacks 8 --size 256 --repeats 20

Exports the model once (ONNX with TernaryConv nodes), runs it with the ORT backend (our kernel
library) and compiles it with the TVM backend for this machine (x86 preset), checks both agree,
then times them interleaved (ORT, TVM, ORT, TVM, ...) so that machine load hits both alike, and
prints medians and the TVM/ORT ratio. Both use --threads threads; TVM's pool does not spin between
calls here (TVM_THREAD_POOL_SPIN_COUNT=0), as both engines share the cores. Extend by adding a backend to `_backends`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _export(model_name: str, stacks: int | None, size: int, work: Path) -> tuple[Path, list[str]]:
    from exporters.onnx import export_onnx
    from lbdeploy.models import build_model

    overrides = {"stacks": stacks} if stacks else {}
    model = build_model(model_name, **overrides)
    task = "classification" if model_name.startswith("resnet") else "pose"
    names = export_onnx(model, work / "model.onnx", (size, size), task)
    return work / "model.onnx", names


def _backends(work: Path, threads: int):
    from exporters.tvm.compile import compile_artifact
    from lbdeploy.kernels.build import build_ort_library
    from runtime.backends.ort import OrtBackend
    from runtime.backends.tvm import TVMBackend

    library = build_ort_library()
    (work / "kernels").mkdir(exist_ok=True)
    target = work / "kernels" / library.name
    target.write_bytes(library.read_bytes())
    ort_manifest = {"custom_ops": [1], "kernel_library": {"path": f"kernels/{library.name}"}}
    started = time.perf_counter()
    fragment = compile_artifact(work / "model.onnx", "x86", work)
    print(f"TVM compile: {time.perf_counter() - started:.1f} s")
    return {"ort": OrtBackend(work, ort_manifest, threads=threads), "tvm": TVMBackend(work, fragment, threads=threads)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lbrn-s")
    parser.add_argument("--stacks", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    # Both engines share this process and its cores: TVM's workers must not spin between calls
    # (ORT's are stopped by the ORT backend), or each steals the other's cores.
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")
    with tempfile.TemporaryDirectory(prefix="tvm-vs-ort-") as tmp:
        work = Path(tmp)
        _, names = _export(args.model, args.stacks, args.size, work)
        backends = _backends(work, args.threads)
        x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
        feeds = {name: {backend.input_names[0]: x} for name, backend in backends.items()}
        outputs = {name: backend.run(feeds[name]) for name, backend in backends.items()}
        final = names[-1]
        scale = float(np.abs(outputs["ort"][final]).max()) or 1.0
        diff = float(np.abs(outputs["tvm"][final] - outputs["ort"][final]).max())
        print(f"max |TVM - ORT| on {final}: {diff:.2e} ({diff / scale:.1e} of max |ORT|)")
        times = {name: [] for name in backends}
        for _ in range(args.repeats):
            for name, backend in backends.items():
                started = time.perf_counter()
                backend.run(feeds[name])
                times[name].append(time.perf_counter() - started)
        medians = {name: statistics.median(values) * 1e3 for name, values in times.items()}
        for name, value in medians.items():
            print(f"{name:>4}: median {value:8.1f} ms   min {min(times[name]) * 1e3:8.1f} ms")
        print(f"ratio TVM/ORT (median): {medians['tvm'] / medians['ort']:.2f}")


if __name__ == "__main__":
    main()
