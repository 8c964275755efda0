"""The `choice` group of bench/run.py: the per-layer kernel choice against its own alternatives and SHN.

For LBRN-S (8 stacks, 256x256) in fp32 and int8 at densities 0.5 and 0.1, one graph is written
with every ternary layer as our op (bench/models.py) and turned into three artifacts' graphs by the
exporter's own kernel choice (lbdeploy.exporters.kernel_choice.choose_forms): `--kernels ternary`,
`--kernels dense` and `--kernels auto` (measured here, with the bench's threads). They run
interleaved with SHN of the same precision:

- the promise: auto <= CHOICE_TOLERANCE x min(ternary, dense), each precision and density;
- the targets of issue 23: LBRN-S8 auto vs SHN8, int8 <= 0.95x / 0.80x, fp32 <= 0.95x / 0.75x.
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

from budget import OpShares, make_budget, profile_interleaved
from common import compare, interleaved_times, ort_session, progress, session_runner

CHOICE_TOLERANCE = 1.03
DENSITIES = (0.5, 0.1)
SHN_TARGETS = {("int8", 0.5): 0.95, ("int8", 0.1): 0.80, ("fp32", 0.5): 0.95, ("fp32", 0.1): 0.75}
MODES = ("ternary", "dense", "auto")


def _variants(source: Path, precision: str, threads: int, library: str, work: Path, progress_prefix: str) -> dict:
    """mode -> model path, each chosen by the exporter's kernel choice from the all-ternary `source`."""
    from lbdeploy.exporters.kernel_choice import choose_forms
    from lbdeploy.targets import host_target

    paths = {}
    for mode in MODES:
        path = work / f"{source.stem}-{mode}.onnx"
        shutil.copy(source, path)
        section = choose_forms(path, precision, mode, "custom", host_target(), "ort", threads=threads,
                               input_shape=(1, 3, 256, 256), library=library)
        ours = sum(row["choice"] == "ternary" for row in section["layers"])
        progress(f"{progress_prefix}: --kernels {mode}: {ours} of {len(section['layers'])} layers as our op"
                 + (f" (whole model ms {section['whole_model_ms']}, kept {section['kept']})" if mode == "auto" else ""))
        paths[mode] = path
    return paths


def run_choice(args, library: str, work: Path) -> tuple[list, list]:
    """auto vs min(ternary, dense) and auto vs SHN8, fp32 and int8, interleaved per precision."""
    import numpy as np

    from lbdeploy.exporters.calibration import CalibrationOptions, load_calibration
    from models import export_network, quantize_network

    stacks, results, bounds = args.stacks, [], []
    images = load_calibration(CalibrationOptions(images=args.calibration_images), (256, 256),
                              {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}).calibration
    x = images[:1].astype(np.float32)
    for precision in args.choice_precision or ("fp32", "int8"):
        models = {}
        for density in DENSITIES:
            label = f"choice {precision} d={density:g}"
            progress(f"{label}: LBRN-S {stacks} stacks, every ternary layer as our op")
            source = work / f"lbrn-s-{precision}-{density:g}.onnx"
            if precision == "fp32":
                export_network("lbrn-s", source, stacks=stacks, density=density)
            else:
                quantize_network("lbrn-s", source, images, stacks=stacks, density=density)
            for mode, path in _variants(source, precision, args.threads, library, work, label).items():
                models[f"{mode}-{density:g}"] = (path, library)
        progress(f"choice {precision}: SHN {stacks} stacks")
        shn = work / f"shn-{precision}.onnx"
        if precision == "fp32":
            export_network("shn", shn, ops="standard", stacks=stacks)
        else:
            quantize_network("shn", shn, images, stacks=stacks)
        models["shn"] = (shn, None)
        runners = {}
        for name, (path, lib) in models.items():
            session = ort_session(path, args.threads, lib)
            runners[name] = session_runner(session, {session.get_inputs()[0].name: x})
        rounds = args.repeats_for("choice")
        progress(f"choice {precision}: timing {len(runners)} models, {rounds} interleaved rounds")
        times = interleaved_times(runners, rounds, warmup=1)
        clock = times["cpu"] if args.threads == 1 else times["wall"]
        for density in DENSITIES:
            best = min(("ternary", "dense"), key=lambda m: statistics.median(clock[f"{m}-{density:g}"]))
            results.append(compare("choice", f"LBRN-S{stacks} {precision} d={density:g} auto vs {best} (best fixed)",
                                   times, f"auto-{density:g}", f"{best}-{density:g}", CHOICE_TOLERANCE,
                                   density=density))
            for mode in MODES:
                results.append(compare("choice", f"LBRN-S{stacks} {precision} d={density:g} {mode} vs SHN{stacks}",
                                       times, f"{mode}-{density:g}", "shn",
                                       SHN_TARGETS[(precision, density)] if mode == "auto" else None, density=density))
        progress(f"choice {precision}: profiling auto and SHN (ORT profiler: where the time goes)")
        profiled = profile_interleaved({name: (path, lib, x) for name, (path, lib) in models.items()
                                        if name.startswith("auto") or name == "shn"}, args.threads,
                                       runs=2 if args.quick else 10)
        if precision == "fp32":
            bounds += [make_budget(f"LBRN-S{stacks} fp32 d={density:g} auto vs SHN{stacks}",
                                   profiled[f"auto-{density:g}"], profiled["shn"], SHN_TARGETS[(precision, density)])
                       for density in DENSITIES]
        else:  # ORT prepacks QLinearConv weights: no 3x3 / 1x1 split to bound against; time per op type
            bounds += [OpShares(f"LBRN-S{stacks} int8 {name} op time", profiled[name].shares(),
                                sum(profiled[name].ops.values())) for name in sorted(profiled)]
    return results, bounds
