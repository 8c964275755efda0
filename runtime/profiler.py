"""Profiling an artifact folder or a model.pt on this machine (the library behind `lbdeploy profile`).

    from runtime.profiler import plan_targets, profile
    targets = plan_targets(["out/"], backend="auto", compare=None, workdir=tmp)
    report = profile(targets, runs=100, warmup=10, batch=1)
    report.to_dict()      # the JSON schema of docs/profile.md

For each target (a source and a backend) it measures the load time (backend construction), the
first run, the latency of `runs` timed runs (min / p50 / p90 / p99 / mean), the throughput
(batch / latency), the memory the backend holds after loading and warming up (resident-set growth)
and the process's resident-set high-water mark. Several targets are timed interleaved (one run of
each in turn per iteration), so machine load hits them alike. The per-op breakdown is a separate
pass after the timed runs, so instrumentation never distorts the latency figures.

To add a breakdown for a backend, write `_<name>_breakdown(loaded, runs, top) -> Breakdown`
and list it in BREAKDOWNS; a backend without one reports latency only, saying so.
"""

from __future__ import annotations

import bisect
import collections
import json
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lbdeploy.errors import ArtifactError, ConfigError

SCHEMA = "lbdeploy-profile/1"
_MB = 1024.0 * 1024.0


@dataclass
class Target:
    """One thing to profile: a source (artifact folder or model.pt) run by one backend.

    Attributes:
        label: the name shown in tables and JSON (the backend name, made unique).
        source: the artifact folder or model.pt.
        backend: the concrete backend name ("torch", "ort", "tvm", "tensorrt").
        manifest: the artifact's manifest ({} for a model.pt; the torch backend derives it).
        exported: True when the folder was exported on the fly from a model.pt for --compare.
    """

    label: str
    source: Path
    backend: str
    manifest: dict
    exported: bool = False


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


@dataclass
class Measurement:
    """What was measured for one target.

    Attributes:
        target: the Target (or, for a remote board, a Target whose label names the board).
        batch / threads: the settings used. load_s: backend construction time. first_run_ms: the
        first (warm-up) run. samples_s: every timed run in seconds. rss_growth_mb: resident memory
        gained over load + warm-up (None when unknown). breakdown: the per-op pass.
        remote: {"address", "key"} for a run on an RPC board.
    """

    target: Target
    batch: int
    threads: int | None
    load_s: float
    first_run_ms: float
    samples_s: list[float]
    rss_growth_mb: float | None
    breakdown: Breakdown
    remote: dict | None = None

    def latency_ms(self) -> dict:
        """min, p50, p90, p99, mean and max of the timed runs, in milliseconds."""
        ms = np.asarray(self.samples_s, dtype=np.float64) * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return {"min": float(ms.min()), "p50": float(p50), "p90": float(p90), "p99": float(p99),
                "mean": float(ms.mean()), "max": float(ms.max())}

    def throughput(self) -> dict:
        """Images per second: batch / p50 latency and batch / mean latency."""
        latency = self.latency_ms()
        return {"p50_images_per_s": self.batch * 1e3 / latency["p50"],
                "mean_images_per_s": self.batch * 1e3 / latency["mean"]}

    def to_dict(self) -> dict:
        """The JSON form of one result (docs/profile.md)."""
        return {
            "label": self.target.label, "source": str(self.target.source), "backend": self.target.backend,
            "exported_on_the_fly": self.target.exported, "remote": self.remote,
            "batch": self.batch, "threads": self.threads, "runs": len(self.samples_s),
            "load_s": self.load_s, "first_run_ms": self.first_run_ms,
            "latency_ms": self.latency_ms(), "throughput": self.throughput(),
            "memory": {"rss_growth_mb": self.rss_growth_mb},
            "breakdown": self.breakdown.to_dict(),
            "samples_ms": [s * 1e3 for s in self.samples_s],
        }


@dataclass
class ProfileReport:
    """All results of one `profile` call; the first result is the baseline of the ratios."""

    results: list[Measurement]
    runs: int
    warmup: int
    peak_rss_mb: float | None

    def ratios(self) -> dict:
        """label -> latency and throughput of each result relative to the first result."""
        base = self.results[0]
        base_latency, base_throughput = base.latency_ms(), base.throughput()["p50_images_per_s"]
        ratios = {}
        for result in self.results:
            latency = result.latency_ms()
            ratios[result.target.label] = {
                "p50": latency["p50"] / base_latency["p50"], "mean": latency["mean"] / base_latency["mean"],
                "throughput": result.throughput()["p50_images_per_s"] / base_throughput,
            }
        return ratios

    def to_dict(self) -> dict:
        """The document printed by `lbdeploy profile --json` (schema in docs/profile.md)."""
        return {
            "schema": SCHEMA,
            "machine": {"arch": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "settings": {"runs": self.runs, "warmup": self.warmup},
            "memory": {"peak_rss_mb": self.peak_rss_mb},
            "baseline": self.results[0].target.label,
            "results": [result.to_dict() for result in self.results],
            "ratios": self.ratios(),
        }


# --- memory ---------------------------------------------------------------------------------------

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


# --- planning -------------------------------------------------------------------------------------

def _open_source(source: Path) -> dict:
    from runtime.artifact import open_artifact

    if source.is_file():
        return {}
    if source.is_dir():
        return open_artifact(source)[1]
    raise ArtifactError(f"{source} does not exist; pass an artifact folder or a model.pt")


def _unique_labels(targets: list[Target]) -> list[Target]:
    counts = collections.Counter(t.label for t in targets)
    seen = collections.Counter()
    for target in targets:
        if counts[target.label] > 1:
            seen[target.label] += 1
            target.label = f"{target.label}#{seen[target.label]}"
    return targets


def plan_targets(sources, backend: str = "auto", compare: list[str] | None = None, workdir=None,
                 progress=lambda message: None) -> list[Target]:
    """What to profile: each source with `backend`, or one source with each backend of `compare`.

    With `compare`, a model.pt runs "torch" itself and is exported on the fly (into `workdir`, for
    this machine) for "ort" and "tvm"; an artifact folder only runs its own backend, so comparing
    backends on artifacts means passing one artifact per backend as several sources.

    Args:
        sources: artifact folders and/or model.pt files (several are compared interleaved).
        backend: "auto" or a backend name, for every source (ignored with `compare`).
        compare: backend names to compare on a single source.
        workdir: folder for on-the-fly exports (needed when `compare` exports).
        progress: called with a message before each export.
    Returns:
        The targets, with unique labels; the first is the baseline of the ratios.
    Raises:
        ConfigError: an invalid combination; ArtifactError: an unreadable artifact.
    """
    from runtime.backends.base import BACKENDS, resolve_backend_name

    sources = [Path(s) for s in sources]
    if not sources:
        raise ConfigError("pass at least one artifact folder or model.pt")
    if not compare:
        targets = []
        for source in sources:
            manifest = _open_source(source)
            name = resolve_backend_name(backend, source, manifest)
            targets.append(Target(name, source, name, manifest))
        return _unique_labels(targets)
    if len(sources) != 1:
        raise ConfigError("--compare takes one source; to compare several artifacts, pass them without --compare")
    source = sources[0]
    manifest = _open_source(source)
    unknown = [name for name in compare if name not in BACKENDS]
    if unknown:
        raise ConfigError(f"unknown backend(s) {unknown} in --compare; choose from {list(BACKENDS)}")
    targets = []
    for name in compare:
        if source.is_dir():
            if name != manifest.get("backend"):
                raise ConfigError(
                    f"{source} is a {manifest.get('backend')!r} artifact and cannot run {name!r}; compare "
                    "artifacts by passing one folder per backend (lbdeploy profile a/ b/), or pass the model.pt"
                )
            targets.append(Target(name, source, name, manifest))
        elif name == "torch":
            targets.append(Target(name, source, name, {}))
        elif name in ("ort", "tvm"):
            targets.append(_export_for(source, name, workdir, progress))
        else:
            raise ConfigError(f"backend {name!r} cannot be exported on the fly; export {source} with "
                              f"`lbdeploy export` on its device and profile the artifact")
    return _unique_labels(targets)


def _export_for(model_pt: Path, backend: str, workdir, progress) -> Target:
    from exporters.export import export_for_this_machine

    if workdir is None:
        raise ConfigError("exporting for --compare needs a work folder")
    out = Path(workdir) / backend
    progress(f"exporting {model_pt} for {backend} (compare)")
    manifest = export_for_this_machine(model_pt, out, backend)
    return Target(backend, out, backend, manifest, exported=True)


# --- measuring ------------------------------------------------------------------------------------

@dataclass
class _Loaded:
    target: Target
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


def _load(target: Target, threads: int | None, batch: int, warmup: int) -> _Loaded:
    from runtime.backends import create_backend

    if target.backend == "tvm":
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


def profile(targets: list[Target], runs: int = 100, warmup: int = 10, threads: int | None = None,
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

    if len(targets) > 1 and any(t.backend == "tvm" for t in targets):
        # The engines share the cores: TVM's workers must not spin between calls (ORT's are stopped
        # by the ORT backend), or each steals the other's cores. Read when TVM's pool starts.
        os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")
    loaded = [_load(target, threads, batch, max(warmup, 1)) for target in targets]
    with tqdm(total=runs * len(loaded), desc="profiling", unit="run", file=sys.stderr,
              disable=None if show_progress is None else not show_progress, leave=False) as bar:
        samples, _ = time_interleaved([lambda item=item: item.backend.run(item.feeds) for item in loaded], runs, bar)
    peak = peak_rss_mb()
    results = []
    for item, times in zip(loaded, samples):
        breakdown = run_breakdown(item, op_runs, top)
        results.append(Measurement(item.target, batch, threads, item.load_s, item.first_run_ms, times,
                                   item.rss_growth_mb, breakdown))
    return ProfileReport(results, runs, max(warmup, 1), peak)


# --- per-op breakdown -----------------------------------------------------------------------------

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


def run_breakdown(item: _Loaded, runs: int, top: int) -> Breakdown:
    """The per-op pass for one loaded target (after its timed runs)."""
    if runs <= 0:
        return Breakdown(False, "per-op pass skipped (--op-runs 0)")
    method = BREAKDOWNS.get(item.target.backend)
    if method is None:
        return Breakdown(False, f"no per-op breakdown for the {item.target.backend} backend; latency only")
    return method(item, runs, top)


def _ort_breakdown(item: _Loaded, runs: int, top: int) -> Breakdown:
    """ONNX Runtime's profiler on a second session of the artifact with the same threads (kernel time per node)."""
    from runtime.backends.ort import OrtBackend

    session = item.backend.session
    threads = session.get_session_options().intra_op_num_threads or None
    with tempfile.TemporaryDirectory(prefix="lbdeploy-ort-profile-") as tmp:
        profiled = OrtBackend(item.target.source, item.manifest, threads=threads, providers=session.get_providers(),
                              profile_prefix=str(Path(tmp) / "ort"))
        for _ in range(runs + 1):  # the first run (allocations) is left out of the totals
            profiled.run(item.feeds)
        events = json.loads(Path(profiled.session.end_profiling()).read_text())
    return ort_trace_breakdown(events, runs, top)


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


def _tvm_breakdown(item: _Loaded, runs: int, top: int) -> Breakdown:
    """Time every call instruction of the Relax VM with an instrument (TVM 0.27 has no VM profiler).

    The instrument is set on the TVMBackend's own VM (TVMBackend has no public hook for it) and
    removed afterwards. GPU calls are synchronized after each call so the time is the kernel's.
    """
    vm, device = item.backend.vm, item.backend.device
    sync = (item.manifest.get("tvm") or {}).get("device", "cpu") != "cpu"
    totals, calls, starts = collections.defaultdict(float), collections.Counter(), []

    def instrument(func, symbol, before_run, ret_value, *args):
        if before_run:
            starts.append(time.perf_counter())
        else:
            if sync:
                device.sync()
            totals[symbol] += time.perf_counter() - starts.pop()
            calls[symbol] += 1
        return 0  # VMInstrumentReturnKind.NO_OP

    vm.set_instrument(instrument)
    try:
        for _ in range(runs):
            item.backend.run(item.feeds)
    finally:
        vm.set_instrument(None)
    by_type, type_calls = collections.defaultdict(float), collections.Counter()
    for symbol, seconds in totals.items():
        by_type[tvm_kernel_family(symbol)] += seconds
        type_calls[tvm_kernel_family(symbol)] += calls[symbol]
    if not totals:
        return Breakdown(False, "the TVM module made no VM calls that could be timed")
    return Breakdown(True, "TVM Relax VM instrument: wall time per VM call (kernels and vm.builtin.* steps); "
                           "types group kernels without TVM's numbering", runs,
                     summarize_times(by_type, type_calls, runs, top), summarize_times(totals, calls, runs, top))


def _torch_breakdown(item: _Loaded, runs: int, top: int) -> Breakdown:
    """torch.profiler self CPU time per aten op (no double counting of nested ops) and per module."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            item.backend.run(item.feeds)
    by_type, type_calls = {}, {}
    for event in prof.key_averages():
        if event.self_cpu_time_total > 0:
            by_type[event.key] = event.self_cpu_time_total * 1e-6
            type_calls[event.key] = event.count
    by_node, node_calls = _torch_module_times(item, runs, torch)
    return Breakdown(True, "torch.profiler self CPU time per op; per node: wall time of each leaf module "
                           "(forward hooks)", runs, summarize_times(by_type, type_calls, runs, top),
                     summarize_times(by_node, node_calls, runs, top))


def _torch_module_times(item: _Loaded, runs: int, torch) -> tuple[dict, dict]:
    """Wall time per leaf module ("name (Type)") over `runs` runs, from forward pre/post hooks."""
    totals, calls, starts, handles = collections.defaultdict(float), collections.Counter(), {}, []
    for name, module in item.backend.model.named_modules():
        if any(True for _ in module.children()):
            continue
        key = f"{name} ({type(module).__name__})"

        def before(_module, _inputs, key=key):
            starts[key] = time.perf_counter()

        def after(_module, _inputs, _output, key=key):
            totals[key] += time.perf_counter() - starts.pop(key)
            calls[key] += 1

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        for _ in range(runs):
            item.backend.run(item.feeds)
    finally:
        for handle in handles:
            handle.remove()
    return totals, calls


BREAKDOWNS = {"ort": _ort_breakdown, "tvm": _tvm_breakdown, "torch": _torch_breakdown}
