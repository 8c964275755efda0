"""Shared plumbing of the bench/ scripts: ONNX Runtime sessions, interleaved timing, results, machine.

Every benchmark here compares engines side by side in one process: `interleaved_times` runs each
contender once per round (A, B, C, A, B, C, ...) so machine load hits all alike, and `Comparison`
turns two timing lists into medians, mins and a time ratio checked against a target. To add a
benchmark, build runner callables (no arguments, one inference each), time them with
`interleaved_times` and report `Comparison`s; never time in tests.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Both engines of a comparison share the cores: TVM's workers must not spin between calls (ORT's are
# stopped per session by session.force_spinning_stop). Set before TVM starts its pool.
os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")


def progress(message: str) -> None:
    """One progress line on stderr (stdout carries the results)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ort_session(model, threads: int, library: str | None = None, profile_prefix: str | None = None):
    """An ONNX Runtime CPU session that does not spin between runs.

    Args:
        model: serialized ONNX bytes or a path to model.onnx.
        threads: intra-op threads (inter-op is 1).
        library: our libternary_ort.so to register (None: standard ops only).
        profile_prefix: turn on ONNX Runtime's profiler, writing its trace to files with this prefix.
    Returns:
        onnxruntime.InferenceSession.
    """
    import onnxruntime as ort

    from lbdeploy.runtime.backends.ort import session_options

    options = session_options(threads, library)
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def session_runner(session, feed: dict) -> Callable[[], object]:
    """A no-argument callable running `session` once on `feed`."""
    return lambda: session.run(None, feed)


def interleaved_times(runners: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict:
    """Time each runner `repeats` times, one call of each per round, after `warmup` rounds.

    Returns:
        {"wall": {name: [seconds...]}, "cpu": {name: [seconds...]}}. "cpu" is the calling thread's
        CPU time: with one intra-op thread ONNX Runtime computes on the calling thread, so it is then
        robust to other load on the machine.
    """
    from lbdeploy.runtime.profiling.measure import time_interleaved

    calls = list(runners.values())
    time_interleaved(calls, warmup)
    wall, cpu = time_interleaved(calls, repeats)
    return {"wall": dict(zip(runners, wall)), "cpu": dict(zip(runners, cpu))}


@dataclass
class Comparison:
    """One side-by-side result: subject time / baseline time, checked against `target` (ratio <= target)."""

    group: str  # "kernel", "block" or "e2e"
    name: str
    subject: str
    baseline: str
    subject_ms: float  # median
    baseline_ms: float
    subject_min_ms: float
    baseline_min_ms: float
    ratio: float  # of the medians
    ratio_of_mins: float
    target: float | None  # None: informative only
    target_text: str
    repeats: int
    density: float | None = None  # of the ternary weights, where one applies
    cpu_ratio_of_mins: float | None = None  # calling-thread CPU time; meaningful with 1 thread only

    @property
    def passed(self) -> bool | None:
        """True/False against the target; None without a target."""
        return None if self.target is None else self.ratio <= self.target

    def to_dict(self) -> dict:
        """JSON-ready fields, with "passed"."""
        return {**asdict(self), "passed": self.passed}


def compare(group: str, name: str, times: dict, subject: str, baseline: str, target: float | None = None,
            target_text: str | None = None, density: float | None = None) -> Comparison:
    """A `Comparison` of two runners of one `interleaved_times` result.

    Args:
        target: the ratio subject/baseline must be at most this (None: no target).
        target_text: how the target reads (default "<= 0.50x").
        density: the ternary density of the subject, recorded with the result.
    """
    wall, cpu = times["wall"], times["cpu"]
    med_s, med_b = statistics.median(wall[subject]), statistics.median(wall[baseline])
    min_s, min_b = min(wall[subject]), min(wall[baseline])
    text = target_text or ("" if target is None else f"<= {target:.2f}x")
    cpu_ratio = min(cpu[subject]) / min(cpu[baseline]) if min(cpu[baseline]) > 0 else None
    return Comparison(group, name, subject, baseline, med_s * 1e3, med_b * 1e3, min_s * 1e3, min_b * 1e3,
                      med_s / med_b, min_s / min_b, target, text, len(wall[subject]), density, cpu_ratio)


def format_comparison(c: Comparison, cpu: bool = False) -> str:
    """One result line: medians (mins), the ratio and the target with its verdict (+ the CPU-time ratio)."""
    verdict = {True: "ok", False: "MISSED", None: ""}[c.passed]
    line = (f"{c.name:<44} {c.subject_ms:>9.2f} ({c.subject_min_ms:8.2f}) {c.baseline_ms:>9.2f} "
            f"({c.baseline_min_ms:8.2f}) {c.ratio:>7.3f}x ({c.ratio_of_mins:.3f}x)  {c.target_text:<18} {verdict:<7}")
    return line + (f" {c.cpu_ratio_of_mins:.3f}x" if cpu and c.cpu_ratio_of_mins is not None else "")


def header(cpu: bool = False) -> str:
    """The column titles of `format_comparison` lines."""
    return (f"{'comparison (subject vs baseline)':<44} {'subject ms':>20} {'baseline ms':>20} {'ratio':>17}  "
            f"{'target':<18} verdict" + (" 1-thread CPU-time ratio (mins)" if cpu else ""))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(threads: int) -> dict:
    """CPU model, usable cores, load average (now), library versions, threads and the date (UTC)."""
    import onnxruntime

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    described = {"cpu": _cpu_model(), "arch": platform.machine(), "cores": cores, "threads": threads,
                 "load_average": [round(v, 2) for v in os.getloadavg()], "onnxruntime": onnxruntime.__version__,
                 "python": platform.python_version(),
                 "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    try:
        import tvm

        described["tvm"] = tvm.__version__
    except ImportError:
        described["tvm"] = None
    return described


def describe_machine(machine: dict) -> str:
    """The machine as one line for the printed report."""
    load = ", ".join(f"{v:.2f}" for v in machine["load_average"])
    after = machine.get("load_average_after")
    load += f" before, {', '.join(f'{v:.2f}' for v in after)} after the run" if after else ""
    return (f"{machine['cpu']} ({machine['arch']}), {machine['cores']} cores, {machine['threads']} threads; "
            f"onnxruntime {machine['onnxruntime']}, tvm {machine['tvm'] or 'absent'}; load average {load}; "
            f"{machine['date']}")
