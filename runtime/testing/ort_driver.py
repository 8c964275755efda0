"""Run a batch of ONNX models with ONNX Runtime in one process and save every output.

Executed inside the emulated ARM lane by `lbdeploy.runtime.testing.arm_lane` (one interpreter start under
qemu for many models), and usable as is on a real board. It needs only numpy and onnxruntime.

    python -m lbdeploy.runtime.testing.ort_driver JOB.json

JOB.json:

    {"library": "/path/libternary_ort.so" or null,   # custom-op library registered in every session
     "intra_op_threads": 0,                          # 0: onnxruntime's default
     "runs": [{"model": "a.onnx", "inputs": "a_in.npz", "outputs": "a_out.npz"}, ...]}

Each run feeds the arrays of `inputs` (named like the model's inputs) and writes every model output,
under its output name, to `outputs`. To add a per-run setting, read it from the run's dict here and
write it in `arm_lane.run_onnx_emulated`.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np


def run_job(job: dict) -> list[Path]:
    """Run every model of `job` (the JOB.json structure) and return the written output files."""
    import onnxruntime as ort

    from lbdeploy.runtime.backends.ort import session_options

    options = session_options(int(job.get("intra_op_threads", 0)) or None, job.get("library"))
    written = []
    for run in job["runs"]:
        session = ort.InferenceSession(run["model"], options, providers=["CPUExecutionProvider"])
        with np.load(run["inputs"]) as data:
            feeds = {name: data[name] for name in data.files}
        names = [output.name for output in session.get_outputs()]
        values = session.run(names, feeds)
        np.savez(run["outputs"], **dict(zip(names, values)))
        written.append(Path(run["outputs"]))
    return written


def main(argv: list[str]) -> int:
    """Entry point: `python -m lbdeploy.runtime.testing.ort_driver JOB.json`."""
    if len(argv) != 1:
        print("usage: python -m lbdeploy.runtime.testing.ort_driver JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    written = run_job(job)
    print(f"ort_driver: {len(written)} model(s) run on {platform.machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
