"""Where the time goes: how much of a model's ONNX Runtime time its 3x3 convolutions take, and what
that allows end to end (Amdahl's law).

Replacing the dense 3x3 convs by TernaryConv speeds up only their share of the time: the 1x1
convs, pooling, upsampling, additions and ORT's layout reorders stay. For a (subject, baseline)
pair of ORT models, one profiled pass of each (ORT's own profiler, kernel time per node) gives

    floor  = (subject time outside TernaryConv) / baseline time
             the best ratio the subject could reach if every TernaryConv took no time;
    in-model kernel ratio = subject's TernaryConv time / baseline's dense 3x3 Conv time;
    needed = (target * baseline time - subject time outside TernaryConv) / baseline 3x3 time
             the in-model kernel ratio a target asks for (<= 0: out of reach, even for free convs).

bench/run.py prints one `Budget` per block and end-to-end comparison, with the in-model kernel ratio
per output map size (where the kernel falls behind inside a network).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common import ort_session

TERNARY, DENSE_3X3, OTHER = "TernaryConv", "dense 3x3 Conv", "other"


TERNARY_OPS = (TERNARY, "QTernaryConv")
# Dense conv op types -> the input index of their weight (int8 convs after ONNX Runtime's QDQ fusion).
DENSE_CONV_WEIGHT = {"Conv": 1, "FusedConv": 1, "QLinearConv": 3, "NhwcQLinearConv": 3}


def classify(op: str, event: dict) -> str:
    """TERNARY (TernaryConv or QTernaryConv), DENSE_3X3 (a dense conv, float or int8, whose weight is
    [.., .., 3, 3]) or OTHER."""
    if op in TERNARY_OPS:
        return TERNARY
    if op in DENSE_CONV_WEIGHT:
        shapes = event.get("args", {}).get("input_type_shape") or []
        index = DENSE_CONV_WEIGHT[op]
        if len(shapes) > index:
            dims = next(iter(shapes[index].values()), [])
            if list(dims[-2:]) == [3, 3]:
                return DENSE_3X3
    return OTHER


def map_size(event: dict) -> str | None:
    """"HxW" of a node's first output, from the trace (None when not recorded)."""
    shapes = event.get("args", {}).get("output_type_shape") or []
    dims = next(iter(shapes[0].values()), []) if shapes else []
    return f"{dims[-2]}x{dims[-1]}" if len(dims) >= 2 else None


@dataclass
class OpTimes:
    """Milliseconds per run: `classes` per op class (TERNARY, DENSE_3X3, OTHER); `sizes` per
    (class, output map size) for the two conv classes."""

    classes: dict[str, float]
    sizes: dict[tuple[str, str], float]
    ops: dict[str, float] = dataclasses.field(default_factory=dict)  # per op type (ORT's, after fusion)

    def shares(self, top: int = 8) -> str:
        """The `top` op types by time, as "QLinearConv 41%, ..." (where the time goes)."""
        total = sum(self.ops.values()) or 1.0
        ranked = sorted(self.ops.items(), key=lambda item: -item[1])[:top]
        return ", ".join(f"{op} {ms / total:.0%}" for op, ms in ranked)


def op_class_times(events: list[dict]) -> OpTimes:
    """The op times of one run of a trace: per key, the median over the model runs (after the
    first) of the summed node kernel times."""
    from lbdeploy.runtime.backends.breakdown import ort_node_events

    per_run = collections.defaultdict(lambda: collections.defaultdict(float))
    for run, _, op, event in ort_node_events(events):
        kind = classify(op, event)
        per_run[run][kind] += event["dur"] * 1e-3
        per_run[run][("op", op)] += event["dur"] * 1e-3
        if kind != OTHER:
            per_run[run][(kind, map_size(event) or "?")] += event["dur"] * 1e-3
    runs = list(per_run.values()) or [{}]
    keys = {key for run in runs for key in run} | {TERNARY, DENSE_3X3, OTHER}
    median = {key: statistics.median(run.get(key, 0.0) for run in runs) for key in keys}
    return OpTimes({key: median[key] for key in (TERNARY, DENSE_3X3, OTHER)},
                   {key: value for key, value in median.items() if isinstance(key, tuple) and key[0] != "op"},
                   {key[1]: value for key, value in median.items() if isinstance(key, tuple) and key[0] == "op"})


def profile_interleaved(models: dict[str, tuple[Path, str | None, np.ndarray]], threads: int, runs: int = 10) -> dict:
    """Profile ORT models side by side: one run of each in turn, `runs` rounds after an untimed one,
    so machine load hits them alike.

    Args:
        models: name -> (single-input model path, custom-op library or None, its input).
    Returns:
        name -> `OpTimes`.
    """
    with tempfile.TemporaryDirectory(prefix="lbdeploy-bench-profile-") as tmp:
        sessions = {name: ort_session(path, threads, library, profile_prefix=str(Path(tmp) / name))
                    for name, (path, library, _) in models.items()}
        feeds = {name: {session.get_inputs()[0].name: models[name][2]} for name, session in sessions.items()}
        for _ in range(runs + 1):
            for name, session in sessions.items():
                session.run(None, feeds[name])
        return {name: op_class_times(json.loads(Path(session.end_profiling()).read_text()))
                for name, session in sessions.items()}


@dataclass
class Budget:
    """The Amdahl bound of one comparison, from profiled op times (ms per run)."""

    name: str
    subject_total_ms: float
    subject_ternary_ms: float
    baseline_total_ms: float
    baseline_3x3_ms: float
    target: float | None
    size_ratios: dict[str, float]  # map size -> subject TernaryConv / baseline dense 3x3 time at that size

    @property
    def floor(self) -> float:
        """Subject / baseline if every TernaryConv took no time."""
        return (self.subject_total_ms - self.subject_ternary_ms) / self.baseline_total_ms

    @property
    def kernel_ratio(self) -> float:
        """The subject's TernaryConv time / the baseline's dense 3x3 Conv time, inside the models."""
        return self.subject_ternary_ms / self.baseline_3x3_ms

    @property
    def needed(self) -> float | None:
        """The in-model kernel ratio the target asks for (<= 0: out of reach); None without a target."""
        if self.target is None:
            return None
        rest = self.subject_total_ms - self.subject_ternary_ms
        return (self.target * self.baseline_total_ms - rest) / self.baseline_3x3_ms

    def to_dict(self) -> dict:
        """JSON-ready fields with floor, kernel_ratio and needed."""
        return {**asdict(self), "floor": self.floor, "kernel_ratio": self.kernel_ratio, "needed": self.needed}


@dataclass
class OpShares:
    """Where one model's time goes by ONNX Runtime op type (int8 models: no 3x3/1x1 split, see run.py)."""

    name: str
    shares: str  # from OpTimes.shares
    total_ms: float

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return asdict(self)

    def line(self) -> str:
        """One printed line."""
        return f"{self.name:<44} {self.total_ms:8.2f} ms of node time: {self.shares}"


def make_budget(name: str, subject: OpTimes, baseline: OpTimes, target: float | None) -> Budget:
    """A `Budget` from the op times of a subject and its baseline (see `op_class_times`)."""
    if baseline.classes[DENSE_3X3] <= 0:
        raise ValueError(f"{name}: the baseline has no dense 3x3 Conv time to compare with")
    sizes = {size: subject.sizes[(TERNARY, size)] / dense for (kind, size), dense in baseline.sizes.items()
             if kind == DENSE_3X3 and dense > 0 and (TERNARY, size) in subject.sizes}
    return Budget(name, sum(subject.classes.values()), subject.classes[TERNARY], sum(baseline.classes.values()),
                  baseline.classes[DENSE_3X3], target, sizes)


def format_budget(b: Budget) -> str:
    """One line: the share of the 3x3 convs, the floor, the in-model kernel ratio and what the target needs."""
    share = b.baseline_3x3_ms / b.baseline_total_ms
    line = (f"{b.name:<44} 3x3 convs {share:4.0%} of baseline; floor {b.floor:.3f}x (TernaryConv free); "
            f"TernaryConv in-model {b.kernel_ratio:.3f}x dense 3x3")
    if b.needed is not None:
        line += (f"; target {b.target:.2f}x needs <= {b.needed:.3f}x" if b.needed > 0
                 else f"; target {b.target:.2f}x out of reach (below the floor)")
    if len(b.size_ratios) > 1:
        by_area = sorted(b.size_ratios.items(), key=lambda item: -_area(item[0]))
        line += "\n" + " " * 45 + "TernaryConv / dense 3x3 per map size: " + ", ".join(
            f"{size} {ratio:.2f}x" for size, ratio in by_area)
    return line


def _area(size: str) -> int:
    height, _, width = size.partition("x")
    return int(height) * int(width) if height.isdigit() and width.isdigit() else 0
