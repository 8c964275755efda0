"""Measuring loaded backends: load time, first run, interleaved timed runs, memory, per-op pass.

    from lbdeploy.runtime.profiling import profile
    report = profile(targets, runs=100, warmup=10, batch=1)   # targets: workflows.compare.plan_targets

For each target it measures the load time (backend construction), the first run, the latency of
`runs` timed runs, the memory the backend holds after loading and warming up (resident-set
growth) and the process's resident-set high-water mark. Several targets are timed interleaved
(one run of each in turn per iteration), so machine load hits them alike. The per-op breakdown is
a separate pass after the timed runs (each backend's `op_breakdown`), so instrumentation never
distorts the latency figures.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lbdeploy.backends import get_backend
from lbdeploy.errors import ConfigError
from lbdeploy.runtime.backends import create_backend
from lbdeploy.runtime.backends.breakdown import Breakdown
from lbdeploy.runtime.profiling.report import Measurement, ProfileReport, ProfiledModel

_MB = 1024.0 * 1024.0


def current_rss_mb() -> float | None:
    """This process's resident set now (Linux /proc/self/statm), or None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / _MB


def peak_rss_mb() -> float | None:
    """This process's resident-set high-water mark (getrusage ru_maxrss), or None where unavailable."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / _MB if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


@dataclass
class _Loaded:
    model: ProfiledModel
    backend: object
    manifest: dict
    feeds: dict
    load_s: float
    first_run_ms: float
    rss_growth_mb: float | None


def check_batch(manifest: dict, batch: int, where) -> None:
    """Refuse a batch size that the artifact was not built for.

    Raises:
        ConfigError: a fixed-batch input or TVM module of another batch size.
    """
    fixed = manifest.get("input", {}).get("shape", [None])[0]
    if isinstance(fixed, int) and fixed > 0 and fixed != batch:
        raise ConfigError(f"{where} takes a fixed batch of {fixed}; profile with --batch {fixed}")
    tvm_batch = (manifest.get("tvm") or {}).get("batch")
    if manifest.get("backend") == "tvm" and tvm_batch and int(tvm_batch) != batch:
        raise ConfigError(
            f"the TVM module of {where} was compiled for batch {tvm_batch}; profile it with --batch {tvm_batch} "
            "(other batch sizes would run as padded or repeated calls of that module)"
        )


def make_feeds(manifest: dict, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A random normalized float32 input of `batch` images in the manifest's input shape."""
    spec = manifest["input"]
    _, channels, height, width = spec["shape"]
    rng = np.random.default_rng(seed)
    return {spec["name"]: rng.standard_normal((batch, int(channels), int(height), int(width))).astype(np.float32)}


def _load(target: ProfiledModel, threads: int | None, batch: int, warmup: int) -> _Loaded:
    check_batch(target.manifest, batch, target.source)
    before = current_rss_mb()
    started = time.perf_counter()
    backend = create_backend(target.backend, target.source, target.manifest, threads=threads)
    load_s = time.perf_counter() - started
    manifest = getattr(backend, "manifest", None) or target.manifest
    check_batch(manifest, batch, target.source)
    feeds = make_feeds(manifest, batch)
    started = time.perf_counter()
    backend.run(feeds)
    first_run_ms = (time.perf_counter() - started) * 1e3
    for _ in range(max(warmup - 1, 0)):
        backend.run(feeds)
    after = current_rss_mb()
    growth = after - before if before is not None and after is not None else None
    return _Loaded(target, backend, manifest, feeds, load_s, first_run_ms, growth)


def time_interleaved(runners: list, runs: int, bar=None) -> tuple[list[list[float]], list[list[float]]]:
    """Time `runs` calls of each runner, one call of each in turn per iteration.

    Args:
        runners: zero-argument callables.
        runs: calls per runner.
        bar: a tqdm bar advanced once per call (optional).
    Returns:
        (wall-clock seconds, calling-thread CPU seconds) per call, one list per runner in each. The
        CPU time is robust to other load when the engine computes on the calling thread (1 thread).
    """
    wall = [[] for _ in runners]
    cpu = [[] for _ in runners]
    for _ in range(runs):
        for index, runner in enumerate(runners):
            started, started_cpu = time.perf_counter(), time.thread_time()
            runner()
            cpu[index].append(time.thread_time() - started_cpu)
            wall[index].append(time.perf_counter() - started)
            if bar is not None:
                bar.update(1)
    return wall, cpu


def profile(targets: list[ProfiledModel], runs: int = 100, warmup: int = 10, threads: int | None = None,
            batch: int = 1, op_runs: int = 5, top: int = 10, show_progress: bool | None = None) -> ProfileReport:
    """Load every target, time them interleaved, then run each backend's per-op breakdown.

    Args:
        targets: from `plan_targets` (the first is the ratio baseline).
        runs: timed runs per target. warmup: untimed runs before timing (>= 1; the first is
            reported as first_run_ms).
        threads: intra-op threads for every backend (None: each backend's default).
        batch: images per run.
        op_runs: runs of the separate per-op pass (0 skips it).
        top: rows kept in each breakdown list.
        show_progress: tqdm bar on stderr (None: only when stderr is a terminal).
    Returns:
        The ProfileReport.
    Raises:
        ConfigError: a batch the artifact cannot take; the backends' own LbdeployErrors.
    """
    from tqdm import tqdm

    if len(targets) > 1:
        # The engines share the cores: each backend says what keeps its idle workers from
        # stealing the others' cores (read when its thread pool starts, so set before loading).
        for target in targets:
            for key, value in get_backend(target.backend).runtime.interleave_env.items():
                os.environ.setdefault(key, value)
    loaded = [_load(target, threads, batch, max(warmup, 1)) for target in targets]
    with tqdm(total=runs * len(loaded), desc="profiling", unit="run", file=sys.stderr,
              disable=None if show_progress is None else not show_progress, leave=False) as bar:
        samples, _ = time_interleaved([lambda item=item: item.backend.run(item.feeds) for item in loaded], runs, bar)
    peak = peak_rss_mb()
    results = []
    for item, times in zip(loaded, samples):
        breakdown = run_breakdown(item, op_runs, top)
        results.append(Measurement(item.model, batch, threads, item.load_s, item.first_run_ms, times,
                                   item.rss_growth_mb, breakdown))
    return ProfileReport(results, runs, max(warmup, 1), peak)


def run_breakdown(item: _Loaded, runs: int, top: int) -> Breakdown:
    """The per-op pass for one loaded target (after its timed runs)."""
    if runs <= 0:
        return Breakdown(False, "per-op pass skipped (--op-runs 0)")
    method = getattr(item.backend, "op_breakdown", None)
    if method is None:
        return Breakdown(False, f"no per-op breakdown for the {item.model.backend} backend; latency only")
    return method(item.feeds, runs, top)


