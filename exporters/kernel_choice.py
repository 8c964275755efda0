"""Per-layer kernel choice: each ternary layer runs as our op or as the runtime's own conv, whichever
is faster where the artifact runs (docs/export.md, "Kernel choice").

`export --kernels auto|ternary|dense` (auto by default) and `lbdeploy tune` call `choose_forms`,
which decides one form per layer (exporters.kernel_forms) and says why, by one of three methods:

- `fixed`: `--kernels ternary|dense`, or `--ops standard` (every layer dense);
- `measured`: the artifact runs on this machine with ONNX Runtime (export for this machine, or
  `lbdeploy tune` on the board). Both uniform graphs (every layer ternary, every layer dense) run
  under ONNX Runtime's profiler with the artifact's threads; each layer takes the form whose
  nodes took less time there, the layout conversions (Transpose, Reorder) that the ternary graph
  adds over the dense one shared out among its ternary layers. The mixed graph then runs against
  both uniform graphs, interleaved, whole: the fastest of the three is kept, so an `auto`
  artifact is never slower than both uniform ones as measured here;
- `model`: a cross target with ONNX Runtime. A cost model per core (`COST_MODELS`: cycles of the
  kernels' inner loops from llvm-mca, or ratios measured on x86) predicts both forms at the layer's
  weight density. TVM and TensorRT compile whatever mix model.onnx holds; with `auto` they keep our
  op (method `fixed`: no cost model of their kernels yet), `--kernels dense` gives them the dense conv.

The manifest's `kernels` section records the mode, method, threads, each layer's choice with its
figures or the model's, and (measured) the whole-model times of the candidates.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lbdeploy.errors import ConfigError
from lbdeploy.exporters.kernel_forms import FORMS, Layer, list_layers, set_forms

MODES = ("auto", *FORMS)
OPS = ("custom", "standard")
PROFILE_RUNS = 5
MIN_ROUNDS, MAX_ROUNDS, ROUND_BUDGET_S = 5, 40, 4.0
LAYOUT_OPS = ("Transpose", "ReorderInput", "ReorderOutput")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class CostModel:
    """Predicted cost of one ternary layer in both forms, linear in the weight density.

    Attributes:
        name: the core or machine modelled. precision: "fp32" or "int8".
        ternary: (cost at density 0.1, cost at density 0.5) of our kernel. dense: cost of the dense
            conv, in the same unit (cycles per output element, or a ratio to dense = 1).
        source: where the figures come from.
    """

    name: str
    precision: str
    ternary: tuple[float, float]
    dense: float
    source: str

    def predict(self, density: float) -> float:
        """Our kernel's cost at `density` (straight line through the two figures)."""
        low, high = self.ternary
        return low + (high - low) * (density - 0.1) / 0.4


_MCA = "llvm-mca estimate, 128->128 3x3 (docs/benchmarks.md, bench/llvm_mca.py)"
_X86 = "measured on Sapphire Rapids (AVX-512 VNNI), ONNX Runtime 1.32, 128->128 3x3 64x64 (issue 23)"
# (arch, has the dot-product extension, precision) -> model
_CYCLES = _MCA + ": cycles per output"
COST_MODELS = {
    ("aarch64", False, "fp32"): CostModel("Cortex-A72/A57", "fp32", (68, 187), 289, _CYCLES),
    ("aarch64", True, "fp32"): CostModel("Cortex-A76/A78 (A57 model)", "fp32", (68, 187), 289, _CYCLES),
    ("aarch64", False, "int8"): CostModel("Cortex-A72/A57 (SMULL int8)", "int8", (27, 79), 144, _CYCLES),
    ("aarch64", True, "int8"): CostModel("Cortex-A76/A78 (SDOT int8)", "int8", (27, 79), 41, _CYCLES),
    ("x86_64", False, "fp32"): CostModel("x86-64 AVX-512", "fp32", (0.34, 0.58), 1.0, _X86 + ": time / ORT Conv"),
    ("x86_64", False, "int8"): CostModel("x86-64 AVX-512 VNNI", "int8", (1.17, 2.45), 1.0, _X86 + ": time / QLinearConv"),
}


def resolve_ops(ops: str | None, kernels: str, spec) -> str:
    """The ops the artifact may hold, from `--ops`, `--kernels` and the backend's capability.

    Args:
        ops: "custom", "standard" or None (the backend's choice: when it runs both, custom unless
            `kernels` is dense; otherwise the one it runs).
        kernels: one of MODES. spec: the backend's record (lbdeploy.backends.BackendSpec; its
            `ops` lists the ops it runs, its default first).
    Raises:
        ConfigError: a combination that cannot be made (one line saying which and why).
    """
    if kernels not in MODES:
        raise ConfigError(f"--kernels must be one of {', '.join(MODES)}, got {kernels!r}")
    runs_both = set(spec.ops) >= set(OPS)
    if ops is None:
        ops = ("standard" if kernels == "dense" else "custom") if runs_both else spec.ops[0]
    if ops not in OPS:
        raise ConfigError(f"--ops must be one of {', '.join(OPS)}, got {ops!r}")
    if ops not in spec.ops:
        raise ConfigError(f"backend {spec.name!r} runs {' and '.join(spec.ops)} ops only; drop --ops {ops}")
    if ops == "standard" and kernels == "ternary":
        raise ConfigError("--kernels ternary runs our op, which --ops standard leaves out; pass one or the other")
    if "standard" not in spec.ops and kernels == "dense":
        raise ConfigError(f"backend {spec.name!r} runs ternary layers as our op only; drop --kernels dense")
    return ops


def measurable_here(target, backend: str) -> bool:
    """True when an artifact for `target` with `backend` runs on this machine in ONNX Runtime."""
    from lbdeploy.kernels.elf import host_arch

    return backend == "ort" and target.gpu is None and target.arch in (None, host_arch())


def _fixed(layers: list[Layer], form: str, reason: str) -> list[dict]:
    return [{**layer.to_dict(), "choice": form, "why": {"method": "fixed", "reason": reason}} for layer in layers]


def _modelled(layers: list[Layer], target, backend: str, precision: str) -> list[dict]:
    from lbdeploy.kernels.elf import host_arch

    arch = target.arch or host_arch()
    model = COST_MODELS.get((arch, "dotprod" in target.isa, precision))
    if backend != "ort" or model is None:
        return _fixed(layers, "ternary", f"no cost model for {backend} on {target.name}: our op, as before")
    rows = []
    for layer in layers:
        ternary = model.predict(layer.density)
        rows.append({**layer.to_dict(), "choice": "ternary" if ternary < model.dense else "dense",
                     "why": {"method": "model", "model": model.name, "ternary": round(ternary, 3),
                             "dense": model.dense, "source": model.source}})
    return rows


def _session(model_bytes: bytes, library: str | None, threads: int | None, profile_prefix: str | None = None):
    import onnxruntime as ort

    from lbdeploy.runtime.backends.ort import session_options

    options = session_options(threads, library)
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])


def _node_times(model_bytes: bytes, library, threads, feed: dict, work: Path) -> dict:
    """Median ms per run of each node of the optimized graph, from ONNX Runtime's profiler (the
    median, so one run slowed by another process does not decide a layer)."""
    import json

    from lbdeploy.runtime.backends.breakdown import ort_node_events

    session = _session(model_bytes, library, threads, str(work / "profile"))
    for _ in range(PROFILE_RUNS + 1):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    runs: dict[str, dict[int, float]] = {}
    for run, node, op, event in ort_node_events(events):
        per_run = runs.setdefault(f"{node}\t{op}", {})
        per_run[run] = per_run.get(run, 0.0) + event["dur"] * 1e-3
    return {key: statistics.median([*per_run.values(), *[0.0] * (PROFILE_RUNS - len(per_run))])
            for key, per_run in runs.items()}


def _owners(model, names: list[str]) -> dict:
    """Node or value name -> layer, for the nodes of each layer and the values they write.

    ONNX Runtime renames nodes it rewrites after their output (the NCHWc transformer's
    `<output>_nchwc`), so a layer's optimized nodes are found by its values as well as its names."""
    layers = set(names)
    owners = {}
    for node in model.graph.node:
        layer = node.name.split("/", 1)[0] if "/" in node.name else None
        if layer in layers:
            owners[node.name] = layer
            for value in node.output:
                owners[value] = layer
                owners[f"{value}_nchwc"] = layer
    return owners


def _per_layer(times: dict, names: list[str], owners: dict) -> tuple[dict, float]:
    """(ms of each layer's own nodes, ms of layout conversions that no layer claims)."""
    per_layer = {name: 0.0 for name in names}
    layout = 0.0
    for key, ms in times.items():
        node, op = key.split("\t")
        owner = owners.get(node) or (node.split("/", 1)[0] if "/" in node else None)
        if owner in per_layer:
            per_layer[owner] += ms
        elif op in LAYOUT_OPS:
            layout += ms
    return per_layer, layout


def _clock(threads: int | None):
    """The clock of the whole-model timing: the calling thread's CPU time when ONNX Runtime runs on
    that thread alone (threads=1), else wall time."""
    return time.thread_time if threads == 1 else time.perf_counter


def _whole_model_ms(sessions: dict, feed: dict, threads) -> dict:
    """Median ms per run of each session, run in turn (interleaved) for a few seconds."""
    clock = _clock(threads)
    samples = {name: [] for name in sessions}
    for session in sessions.values():
        session.run(None, feed)
    started = time.perf_counter()
    for round_index in range(MAX_ROUNDS):
        for name, session in sessions.items():
            start = clock()
            session.run(None, feed)
            samples[name].append((clock() - start) * 1e3)
        if round_index + 1 >= MIN_ROUNDS and time.perf_counter() - started > ROUND_BUDGET_S:
            break
    return {name: round(statistics.median(values), 4) for name, values in samples.items()}


def _variant(model, forms: dict, precision: str, layout: str):
    import onnx

    variant = onnx.ModelProto()
    variant.CopyFrom(model)
    set_forms(variant, forms, precision, layout)
    return variant


def _measured(model, layers: list[Layer], precision: str, layout: str, library, threads, input_shape,
              progress) -> tuple[list, dict]:
    names = [layer.name for layer in layers]
    feed = {model.graph.input[0].name: np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)}
    variants = {form: _variant(model, dict.fromkeys(names, form), precision, layout) for form in FORMS}
    graphs = {form: variant.SerializeToString() for form, variant in variants.items()}
    progress(f"kernel choice: profiling {len(names)} ternary layers as our op and as the runtime's conv "
             f"({threads or 'default'} threads)")
    with tempfile.TemporaryDirectory(prefix="lbdeploy-kernels-") as tmp:
        profiled = {form: _per_layer(_node_times(graphs[form], library, threads, feed, Path(tmp)), names,
                                     _owners(variants[form], names)) for form in FORMS}
    (ternary_ms, ternary_layout), (dense_ms, dense_layout) = profiled["ternary"], profiled["dense"]
    layout_share = max(ternary_layout - dense_layout, 0.0) / max(len(names), 1)
    rows, forms = [], {}
    for layer in layers:
        ours = ternary_ms[layer.name] + layout_share
        forms[layer.name] = "ternary" if ours < dense_ms[layer.name] else "dense"
        rows.append({**layer.to_dict(), "choice": forms[layer.name],
                     "why": {"method": "measured", "ternary_ms": round(ours, 4),
                             "dense_ms": round(dense_ms[layer.name], 4), "layout_ms": round(layout_share, 4)}})
    candidates = dict(graphs)
    if len(set(forms.values())) > 1:
        candidates["mixed"] = _variant(model, forms, precision, layout).SerializeToString()
    progress(f"kernel choice: timing the whole model with {', '.join(candidates)} layers, interleaved")
    whole = _whole_model_ms({name: _session(data, library, threads) for name, data in candidates.items()}, feed,
                            threads)
    best = min(whole, key=whole.get)
    if best in FORMS:
        for row in rows:
            if row["choice"] != best:
                row["why"]["overruled"] = f"the whole model ran fastest with every layer {best}"
            row["choice"] = best
    return rows, {"whole_model_ms": whole, "kept": best,
                  "clock": "thread CPU time" if threads == 1 else "wall time"}


def choose_forms(model_path: Path, precision: str, mode: str, ops: str, target, backend: str,
                 threads: int | None = None, input_shape=None, library=None,
                 known=(), progress: Progress = lambda message: None) -> dict:
    """Choose and apply each ternary layer's form in the ONNX file `model_path` (rewritten in place).

    Args:
        model_path: the model.onnx with its ternary layers as our op (or as chosen before, for tune).
        precision: "fp32" or "int8". mode: one of MODES. ops: "custom" or "standard" (resolve_ops).
        target: the lbdeploy.targets.Target; backend: the backend name.
        threads: intra-op threads the artifact runs with (None: ONNX Runtime's default).
        input_shape: the model input's shape for measuring ([1, 3, H, W]).
        library: this machine's kernel library (needed to measure).
        known: layer names of an earlier choice (tune), so layers now in the dense form are found.
    Returns:
        The manifest's `kernels` section.
    """
    import onnx

    from lbdeploy.exporters.quantize import ternary_layout

    model = onnx.load(str(model_path))
    layers = list_layers(model, known)
    layout = ternary_layout(backend) if precision == "int8" else "NCHW"
    if precision == "int8":  # put every bias on QLinearConv's int32 grid: both forms then compute the same
        set_forms(model, {layer.name: "dense" for layer in layers}, precision)
    extra = {}
    if ops == "standard":
        rows = _fixed(layers, "dense", "--ops standard")
    elif mode in FORMS:
        rows = _fixed(layers, mode, f"--kernels {mode}")
    elif layers and measurable_here(target, backend):
        rows, extra = _measured(model, layers, precision, layout, str(library), threads, input_shape, progress)
    else:
        rows = _modelled(layers, target, backend, precision)
    set_forms(model, {row["name"]: row["choice"] for row in rows}, precision, layout)
    onnx.save(model, str(model_path))
    method = rows[0]["why"]["method"] if rows else "fixed"
    return {"mode": mode, "method": method, "precision": precision, "threads": threads, **extra, "layers": rows}


def layer_choices(manifest: dict) -> list[dict]:
    """Each ternary layer's recorded choice; an artifact written before the choice existed ran every
    ternary layer as our op, and gets an empty list (its `kernels` section is absent)."""
    return list(manifest.get("kernels", {}).get("layers", []))


def machine_line() -> str:
    """This machine in one line: CPU model, architecture, cores, ONNX Runtime version."""
    import os
    import platform

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import onnxruntime

        runtime = f", onnxruntime {onnxruntime.__version__}"
    except ImportError:
        runtime = ""
    return f"{model} ({platform.machine()}, {os.cpu_count()} cores{runtime})"


def choice_table(section: dict, machine: bool = False) -> str:
    """The per-layer choice as a Markdown table (what `lbdeploy tune` prints, to paste into an issue).

    Args:
        section: the manifest's `kernels` section. machine: start with this machine's description.
    """
    lines = [f"machine: {machine_line()}"] if machine else []
    lines.append(f"kernels: {section.get('mode')} ({section.get('method')}), {section.get('precision')}, "
                 f"threads {section.get('threads') or 'default'}")
    if section.get("whole_model_ms"):
        whole = ", ".join(f"{name} {ms:.2f} ms" for name, ms in section["whole_model_ms"].items())
        lines.append(f"whole model ({section.get('clock')}): {whole}; kept: {section.get('kept')}")
    lines += ["", "| layer | density | choice | ternary | dense | why |", "|---|---|---|---|---|---|"]
    for row in section.get("layers", []):
        why = row.get("why", {})
        ternary, dense = why.get("ternary_ms", why.get("ternary", "")), why.get("dense_ms", why.get("dense", ""))
        note = why.get("overruled") or why.get("reason") or why.get("model") or why.get("method")
        lines.append(f"| {row['name']} | {row.get('density', '')} | {row['choice']} | {ternary} | {dense} | {note} |")
    return "\n".join(lines)
