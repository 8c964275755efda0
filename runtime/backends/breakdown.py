"""Per-op time: the `Breakdown` record and the helpers the backends' `op_breakdown` methods share.

Each runtime backend measures its own per-op time with its engine's profiler (ONNX Runtime's
trace, TVM's VM instrument, torch.profiler) and returns a `Breakdown`; the trace readers and the
table builder used there live here, so `bench/` reads ONNX Runtime traces the same way.
"""

from __future__ import annotations

import bisect
import collections
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Breakdown:
    """Per-op time from the backend's own profiler, over `runs` untimed runs.

    Attributes:
        available: False when this backend or module gives no breakdown (`note` says why).
        note: what was measured and how, or why nothing was.
        runs: how many runs the totals cover (per_run_ms = total_ms / runs).
        by_type: [{"name", "total_ms", "per_run_ms", "calls", "share"}], largest first (op types).
        by_node: the same per node / kernel / layer.
    """

    available: bool
    note: str | None = None
    runs: int = 0
    by_type: list[dict] = field(default_factory=list)
    by_node: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON form (docs/profile.md)."""
        return {"available": self.available, "note": self.note, "runs": self.runs,
                "by_type": self.by_type, "by_node": self.by_node}


@contextmanager
def native_output_silenced():
    """Send what native code writes to the process's stdout and stderr to /dev/null meanwhile.

    Engine profilers print their own status lines from C++ (torch.profiler's Kineto:
    "USDT: ... profiler_start"), which Python's redirection cannot catch; `lbdeploy profile`
    prints only its own report. Python's streams are flushed first so nothing of ours is lost.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def summarize_times(times: dict[str, float], calls: dict[str, int], runs: int, top: int) -> list[dict]:
    """Rows {"name", "total_ms", "per_run_ms", "calls", "share"} for the `top` largest totals.

    Args:
        times: name -> total seconds. calls: name -> number of calls. runs: runs covered.
        top: rows kept (share is of the grand total, including the rows left out).
    """
    grand = sum(times.values()) or 1.0
    rows = sorted(times.items(), key=lambda item: item[1], reverse=True)[:top]
    return [{"name": name, "total_ms": total * 1e3, "per_run_ms": total * 1e3 / max(runs, 1),
             "calls": int(calls.get(name, 0)), "share": total / grand} for name, total in rows]


def ort_node_events(events: list[dict]):
    """Yield (run, node name, op type, event) for each node kernel of an ONNX Runtime profiling
    trace, `run` being the index of the model run holding it; the first model run (allocations) is
    left out when the trace holds more than one."""
    model_runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    ends = [end for _, end in model_runs]
    skip_before = ends[0] if len(ends) > 1 else -1
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        if event["ts"] <= skip_before:
            continue
        run = bisect.bisect_left(ends, event["ts"])
        yield run, event["name"][:-len("_kernel_time")], event.get("args", {}).get("op_name", "?"), event


def ort_trace_breakdown(events: list[dict], runs: int, top: int) -> Breakdown:
    """Sum an ONNX Runtime profiling trace per op type and per node, skipping the first model run.

    Args:
        events: the parsed JSON trace (chrome-trace events; node kernels are "<node>_kernel_time").
        runs: runs after the first one. top: rows kept.
    """
    by_type, by_node = collections.defaultdict(float), collections.defaultdict(float)
    type_calls, node_calls = collections.Counter(), collections.Counter()
    for _, node, op, event in ort_node_events(events):
        by_type[op] += event["dur"] * 1e-6
        by_node[f"{node} ({op})"] += event["dur"] * 1e-6
        type_calls[op] += 1
        node_calls[f"{node} ({op})"] += 1
    if not by_type:
        return Breakdown(False, "ONNX Runtime's trace holds no node timings")
    return Breakdown(True, "ONNX Runtime profiler: kernel time per node (SessionOptions.enable_profiling)",
                     runs, summarize_times(by_type, type_calls, runs, top),
                     summarize_times(by_node, node_calls, runs, top))


_TVM_NUMBERING = re.compile(r"(?<=[a-z])\d+(?=_|$)")


def tvm_kernel_family(symbol: str) -> str:
    """A TVM kernel symbol without the numbers TVM appends to repeated names
    ("fused_conv2d8_add4_relu2" -> "fused_conv2d_add_relu", "ternary_conv3" -> "ternary_conv")."""
    return symbol if symbol.startswith("vm.") else _TVM_NUMBERING.sub("", symbol)


