"""Smoke test of the benchmark suite (bench/run.py): it runs and reports every ratio with its target.

Speed itself is never asserted here (bench/ measures it); only that the suite runs end to end in a
subprocess and writes the machine-readable results.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("torch", reason="torch is not installed (needed to export the block models)")

REPO = Path(__file__).resolve().parents[1]


def _run_suite(tmp_path: Path, library: str, *args: str) -> dict:
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--repeats", "2", "--library", library,
         "--json", str(out), *args],
        capture_output=True, text=True, timeout=1200, cwd=tmp_path,  # a hang guard, far above idle times
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["quick"] is True
    assert {"cpu", "cores", "threads", "onnxruntime", "date", "load_average"} <= set(data["machine"])
    return {"data": data, "stdout": result.stdout, "stderr": result.stderr}


def test_kernel_and_block_report_ratios_with_targets(tmp_path, library):
    run = _run_suite(tmp_path, library, "--only", "kernel", "--only", "block")
    comparisons = run["data"]["comparisons"]
    kernel = {c["density"]: c for c in comparisons if c["group"] == "kernel"}
    block = [c for c in comparisons if c["group"] == "block"]
    assert set(kernel) == {0.1, 0.5}
    assert (kernel[0.5]["target"], kernel[0.1]["target"]) == (0.5, 0.2)
    assert any(c["target"] == 0.6 and c["density"] == 0.5 for c in block)
    for c in comparisons:
        assert c["ratio"] > 0 and c["subject_ms"] > 0 and c["baseline_ms"] > 0 and c["repeats"] == 2
        assert c["passed"] is None if c["target"] is None else c["passed"] == (c["ratio"] <= c["target"])
        assert c["name"] in run["stdout"]
    assert "<= 0.50x" in run["stdout"] and "<= 0.60x" in run["stdout"]
    # the Amdahl bound of each block comparison, from a profiled pass of the real models
    budgets = {b["name"]: b for b in run["data"]["budgets"]}
    assert set(budgets) == {c["name"] for c in block}
    for b in budgets.values():
        # structure and arithmetic only: measured ratios vary with the machine's load (no bound on them)
        assert 0 < b["subject_ternary_ms"] < b["subject_total_ms"] and 0 < b["baseline_3x3_ms"] < b["baseline_total_ms"]
        rest = b["subject_total_ms"] - b["subject_ternary_ms"]
        assert b["floor"] == pytest.approx(rest / b["baseline_total_ms"])
        assert b["kernel_ratio"] == pytest.approx(b["subject_ternary_ms"] / b["baseline_3x3_ms"])
        assert b["name"] in run["stdout"] and "floor" in run["stdout"]
    assert budgets[next(c["name"] for c in block if c["target"])]["needed"] is not None
    assert "block: exporting" in run["stderr"]  # progress goes to stderr


@pytest.mark.slow
def test_end_to_end_group_runs(tmp_path, library):
    run = _run_suite(tmp_path, library, "--only", "e2e", "--stacks", "1", "--skip-tvm")
    names = [c["name"] for c in run["data"]["comparisons"]]
    for needle in ("vs SHN fp32", "vs SHN int8", "vs LBRN-S plain Conv"):
        assert any(needle in name for name in names), needle
    targets = {c["target"] for c in run["data"]["comparisons"] if c["target"] is not None}
    assert sorted(targets) == pytest.approx([0.5, 0.65, 1 / 1.5])
    budgets = run["data"]["budgets"]
    assert len(budgets) == 4 and all(b["target"] is not None and b["subject_ternary_ms"] > 0 for b in budgets)


@pytest.mark.slow
def test_saliency_group_compares_cpd_lb_with_cpd(tmp_path, library):
    run = _run_suite(tmp_path, library, "--only", "saliency", "--saliency-size", "64", "--saliency-width", "8")
    comparisons = run["data"]["comparisons"]
    assert [(c["subject"], c["baseline"]) for c in comparisons] == [("cpd-lb-vgg16", "cpd-vgg16"),
                                                                     ("cpd-lb-resnet50", "cpd-resnet50")]
    for c in comparisons:
        assert c["group"] == "saliency" and c["ratio"] > 0 and c["target"] is None and c["name"] in run["stdout"]
