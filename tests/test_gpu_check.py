"""bench/gpu_check.py: its comparisons, and scripts/gpu-check.sh --dry-run rehearsing every step on the CPU."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import gpu_check  # noqa: E402
from test_tensorrt import trt_include  # noqa: E402,F401 - the TensorRT headers fixture (downloaded once)


def test_compare_keeps_nan_in_place_and_scales_the_float16_tolerance():
    expected = np.array([1.0, np.nan, 100.0, -np.inf], np.float32)
    assert gpu_check.compare(expected.copy(), expected, float16=False)["ok"]
    moved = np.array([np.nan, 1.0, 100.0, -np.inf], np.float32)
    assert not gpu_check.compare(moved, expected, float16=False)["ok"]
    off = expected + np.array([0, 0, 0.1, 0], np.float32)  # 0.1 on 100: beyond 1e-4, within 2e-3 x (100 + 1)
    assert not gpu_check.compare(off, expected, float16=False)["ok"]
    result = gpu_check.compare(off.astype(np.float16), expected, float16=True)
    assert result["ok"] and result["max_abs_diff"] == pytest.approx(0.1, abs=0.05)


def test_case_geometry_follows_onnx_conv_and_the_kernel_struct():
    case = gpu_check.conv_case("c", (2, 16, 9, 10), 8, 3, 2, 1, dilation=1, group=2, activation="relu")
    assert case["y_shape"] == [2, 8, 5, 5]
    fields = gpu_check.geometry_fields(case)
    g = gpu_check.Geometry(*fields)
    assert (g.n, g.c, g.cout, g.oh, g.ow, g.stride_w, g.pad_left, g.group, g.activation) == (2, 16, 8, 5, 5, 2, 1, 2, 1)
    assert len(fields) == len(gpu_check.Geometry._fields_)


def test_a_failing_step_is_reported_and_fails_the_run():
    def broken():
        raise RuntimeError("lbd_ternary_conv_run returned 1")

    result = gpu_check.guarded(broken)
    assert result == {"ok": False, "error": "RuntimeError: lbd_ternary_conv_run returned 1"}
    assert not gpu_check.passed(result) and gpu_check.passed({"ok": True})
    good = {"case": "a", "fp32": {"ok": True}, "fp16": {"ok": True}}
    assert gpu_check.passed([good]) and not gpu_check.passed([good, {**good, "cudnn_fp32": {"ok": False}}])


@pytest.mark.slow  # prepares ORT references and a TVM module, builds the kernel and the plugin (a few minutes)
@pytest.mark.skipif(shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists(),
                    reason="nvcc (CUDA toolkit) not installed")
def test_gpu_check_dry_run_rehearses_every_step(trt_include, tmp_path):  # noqa: F811
    report_path = tmp_path / "report.json"
    env = dict(os.environ, PYTHON=sys.executable, TENSORRT_INCLUDE_DIR=str(trt_include))
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu-check.sh"), "--dry-run", "--json", str(report_path)],
                          capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(report_path.read_text())
    assert report["dry_run"] and report["ok"]
    vectors = sorted(p.stem for p in (REPO / "tests" / "vectors").glob("*.npz"))
    names = [g["case"] for g in report["geometries"]]
    assert names[:len(vectors)] == vectors and all(g["ok"] for g in report["geometries"])
    assert sum(name.startswith("lbrn_s.") for name in names) == 7  # one LBRN-S layer per distinct shape
    assert report["tvm_ptx"]["ok"] and report["tvm_ptx"]["entries"] >= 2
    assert report["plugin"]["built"] == ["libternary_trt.so", "gpu_check_plugin"]
    plan = report["timing_plan"]
    assert (plan[0]["cin"], plan[0]["cout"], plan[0]["h"], plan[0]["w"]) == (128, 128, 64, 64) and len(plan) >= 2
    assert plan[0]["densities"] == [0.0, 0.1, 0.5, 1.0]
    assert {"cudnn_fp32", "cudnn_tf32", "cudnn_fp16_nchw", "cudnn_fp16_nhwc"} <= set(plan[0]["timed"])
