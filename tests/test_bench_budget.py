"""The Amdahl bound of bench/budget.py: op classes read from ONNX Runtime traces, and the bound's arithmetic.

The traces here are small hand-written ones in ONNX Runtime's format (the real profiler runs in
test_bench.py's suite run); what is tested is the reading and the arithmetic, not speed.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from budget import DENSE_3X3, OTHER, TERNARY, OpTimes, classify, format_budget, make_budget, op_class_times  # noqa: E402


def _node(name: str, op: str, ts: int, dur: int, weight=None, size: int = 64) -> dict:
    shapes = [{"float": [1, 128, size, size]}] + ([{"float": weight}] if weight else [])
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
            "args": {"op_name": op, "input_type_shape": shapes, "output_type_shape": [{"float": [1, 128, size, size]}]}}


def _run(ts: int, dur: int) -> dict:
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}


def test_classify_by_op_and_weight_shape():
    assert classify("TernaryConv", {}) == TERNARY
    assert classify("Conv", _node("c", "Conv", 0, 1, [128, 128, 3, 3])) == DENSE_3X3
    assert classify("FusedConv", _node("c", "FusedConv", 0, 1, [128, 16, 3, 3])) == DENSE_3X3
    assert classify("Conv", _node("c", "Conv", 0, 1, [256, 128, 1, 1])) == OTHER
    assert classify("Conv", _node("c", "Conv", 0, 1, [64, 3, 7, 7])) == OTHER
    assert classify("Conv", _node("c", "Conv", 0, 1)) == OTHER  # no weight shape recorded
    assert classify("MaxPool", _node("m", "MaxPool", 0, 1, [3, 3])) == OTHER


def test_op_class_times_median_per_run_without_the_first_run():
    events = [
        _run(0, 100), _node("a", "Conv", 10, 50_000, [8, 8, 3, 3]),  # first run: allocations, left out
        _run(200, 100), _node("a", "Conv", 210, 2_000, [8, 8, 3, 3]), _node("t", "TernaryConv", 220, 1_000),
        _node("p", "Conv", 230, 500, [8, 8, 1, 1]), _node("r", "ReorderInput", 240, 100),
        _run(400, 100), _node("a", "Conv", 410, 4_000, [8, 8, 3, 3]), _node("t", "TernaryConv", 420, 3_000),
        _node("p", "Conv", 430, 700, [8, 8, 1, 1]),
        _run(600, 100), _node("a", "Conv", 610, 3_000, [8, 8, 3, 3]), _node("t", "TernaryConv", 620, 2_000),
        _node("p", "Conv", 630, 900, [8, 8, 1, 1]), _node("s", "TernaryConv", 640, 400, size=8),
    ]
    times = op_class_times(events)
    assert times.classes[DENSE_3X3] == pytest.approx(3.0)  # median of 2, 4, 3 ms; the 50 ms first run is out
    assert times.classes[TERNARY] == pytest.approx(2.4)  # runs: 1, 3, 2.4 (2 + 0.4 at 8x8)
    assert times.classes[OTHER] == pytest.approx(0.7)  # runs: 0.6, 0.7, 0.9 ms
    assert times.sizes[(TERNARY, "64x64")] == pytest.approx(2.0)
    assert times.sizes[(TERNARY, "8x8")] == pytest.approx(0.0)  # only in one run of three
    assert times.sizes[(DENSE_3X3, "64x64")] == pytest.approx(3.0)
    assert not any(kind == OTHER for kind, _ in times.sizes)


def _times(classes: dict, sizes: dict | None = None) -> OpTimes:
    return OpTimes(classes, sizes or {})


def test_budget_floor_kernel_ratio_and_needed():
    subject = _times({TERNARY: 2.0, DENSE_3X3: 0.0, OTHER: 4.0}, {(TERNARY, "64x64"): 1.5, (TERNARY, "8x8"): 0.5})
    baseline = _times({TERNARY: 0.0, DENSE_3X3: 6.0, OTHER: 4.0}, {(DENSE_3X3, "64x64"): 5.0, (DENSE_3X3, "8x8"): 1.0})
    budget = make_budget("x", subject, baseline, 0.65)
    assert budget.size_ratios == pytest.approx({"64x64": 0.3, "8x8": 0.5})
    assert "64x64 0.30x, 8x8 0.50x" in format_budget(budget)  # largest map first
    assert budget.floor == pytest.approx(0.4)  # 4 / 10: the rest of the subject over the baseline
    assert budget.kernel_ratio == pytest.approx(2 / 6)
    assert budget.needed == pytest.approx((6.5 - 4.0) / 6.0)
    assert "needs <= 0.417x" in format_budget(budget)
    unreachable = make_budget("y", subject, baseline, 0.3)
    assert unreachable.needed < 0 and "out of reach" in format_budget(unreachable)
    assert make_budget("z", subject, baseline, None).needed is None
    assert set(budget.to_dict()) >= {"floor", "kernel_ratio", "needed", "target"}


def test_budget_needs_a_dense_baseline():
    with pytest.raises(ValueError, match="no dense 3x3"):
        make_budget("x", _times({TERNARY: 1.0, DENSE_3X3: 0.0, OTHER: 1.0}),
                    _times({TERNARY: 1.0, DENSE_3X3: 0.0, OTHER: 1.0}), 0.5)

