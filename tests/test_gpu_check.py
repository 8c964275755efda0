"""scripts/gpu-check.sh --dry-run: the GPU check compiles the kernel and its python parts run without a GPU."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # builds the kernel and runs LBRN-S once on the CPU (about a minute)
@pytest.mark.skipif(shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists(),
                    reason="nvcc (CUDA toolkit) not installed")
def test_gpu_check_dry_run_compiles_and_lists_every_lbrn_s_shape():
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu-check.sh"), "--dry-run"], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    vectors = sorted(p.stem for p in (REPO / "tests" / "vectors").glob("*.npz"))
    assert all(f"vector {name:28s} geometry ok" in done.stdout for name in vectors)
    assert "LBRN-S: 115 ternary layers, all accepted by the kernel: True" in done.stdout
    timed = [line for line in done.stdout.splitlines() if line.startswith("would time")]
    assert timed[0].startswith("would time (cin, cout, h, w, stride) = (128, 128, 64, 64, 1)")
    assert len(timed) >= 2
