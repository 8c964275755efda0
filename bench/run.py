"""The benchmark suite of issue 6: every speed ratio with its target, measured side by side.

    .venv/bin/python bench/run.py                        # kernel, block and end to end, 2 threads
    .venv/bin/python bench/run.py --quick --only kernel  # smoke test
    .venv/bin/python bench/run.py --json out.json --skip-tvm
    .venv/bin/python bench/run.py --only kernel --save-advice --threads 1   # refresh lbdeploy/data/bench_results.json

Groups (docs/benchmarks.md says what each one means):
- kernel: TernaryConv (ORT + libternary_ort.so) vs ORT dense fp32 Conv, 128->128 3x3 64x64;
- block: the LBB block vs the dense bottleneck (256 channels, 128 mid, 64x64), both exported
  through the project exporter and run in ORT;
- e2e: LBRN-S 8 stacks 256x256 (ORT, and TVM when installed) vs SHN fp32, SHN int8 (ORT static
  quantization) and LBRN-S lowered to plain Conv (`--ops standard`);
- int8: QTernaryConv vs ORT's QLinearConv (per-channel int8), 128->128 3x3 64x64, uint8 in/out; and
  LBRN-S 8 stacks int8 (our int8 export: QDQ + QTernaryConv) vs SHN 8 stacks int8 (the same export:
  plain QDQ) and SHN fp32, every int8 model calibrated on the same synthetic images.
- saliency: CPD-LB vs CPD on the same backbone (VGG16, ResNet50), the paper's 352x352 input, ORT.
- choice: the per-layer kernel choice (`export --kernels auto`) vs `--kernels ternary` and
  `--kernels dense`, and vs SHN, LBRN-S 8 stacks fp32 and int8 at densities 0.5 and 0.1 (bench/choice.py).

Within a group every contender runs once per round (interleaved), so machine load hits all alike;
ratios are of medians (mins in brackets). The targets apply to the best backend. To add a
comparison, add its runner to a group's `runners` and a `compare(...)` line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from budget import OpShares, format_budget, make_budget, profile_interleaved
from common import (REPO, compare, describe_machine, format_comparison, header, interleaved_times,
                    machine_description, ort_session, progress, session_runner)
from kernel import kernel_comparisons
from qkernel import TARGETS as QKERNEL_TARGETS, qsessions

GROUPS = ("kernel", "block", "e2e", "int8", "saliency", "choice")
KERNEL_DENSITIES = (0.1, 0.5)
# Densities of the density advice of `lbdeploy inspect`: the ones of the paper's Table 2.
ADVICE_DENSITIES = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
ADVICE_FILE = REPO / "lbdeploy" / "data" / "bench_results.json"
BLOCK_TARGET = 0.60  # LBB / dense bottleneck at density 0.5
E2E_TARGETS = {0.5: 0.65, 0.1: 0.50}  # LBRN-S / SHN fp32
PLAIN_SPEEDUP = 1.5  # LBRN-S at least this much faster than LBRN-S as plain Conv
E2E_STACKS, E2E_SIZE = 8, 256
INT8_KERNEL_TARGETS = QKERNEL_TARGETS  # QTernaryConv / QLinearConv, both channels-last (bench/qkernel.py)
INT8_E2E_TARGETS = {0.5: (0.80, 0.40), 0.1: (0.60, 0.30)}  # LBRN-S int8 / (SHN int8, SHN fp32)
SALIENCY_SIZE = 352  # CPD's input (Wu et al.; the paper's Table 10)
SALIENCY_BACKBONES = ("vgg16", "resnet50")
# (kernel, block, e2e, int8, saliency, choice) repeats; the int8 group's kernel rows take 5x its e2e rounds
REPEATS = {"full": (50, 30, 10, 10, 10, 10), "quick": (3, 3, 2, 2, 2, 2)}


def run_kernel(args, library: str) -> tuple[list, list]:
    """TernaryConv vs dense Conv at the target densities (all advice densities with --save-advice)."""
    densities = sorted(set(KERNEL_DENSITIES) | (set(ADVICE_DENSITIES) if args.save_advice else set()))
    progress(f"kernel: densities {', '.join(f'{d:g}' for d in densities)}")
    return kernel_comparisons(densities, args.threads, args.repeats_for("kernel"), library), []


def budgets(args, models: dict, pairs: list, group: str) -> list:
    """One profiled pass over the ORT models named in `pairs` ((label, subject, baseline, target)),
    interleaved, then a `Budget` per pair (see bench/budget.py).

    Args:
        models: name -> (model path, custom-op library or None, input), as `profile_interleaved` takes.
    """
    names = sorted({n for _, subject, baseline, _ in pairs for n in (subject, baseline)})
    progress(f"{group}: profiling {', '.join(names)} (ORT profiler, interleaved: where the time goes)")
    times = profile_interleaved({name: models[name] for name in names}, args.threads, runs=2 if args.quick else 10)
    return [make_budget(label, times[subject], times[baseline], target) for label, subject, baseline, target in pairs]


def run_block(args, library: str, work: Path) -> tuple[list, list]:
    """LBB vs the dense bottleneck, 256 channels, 128 mid, 64x64, in ORT."""
    from models import export_block

    x = np.random.default_rng(0).standard_normal((1, 256, 64, 64)).astype(np.float32)
    runners, models = {}, {}
    for variant, density in (("dense", 0.5), ("lbb", 0.5), ("lbb", 0.1)):
        name = f"{variant}-{density:g}"
        progress(f"block: exporting {variant} (density {density:g})")
        path = export_block(variant, density, work / f"block-{name}.onnx")
        models[name] = (path, library if variant != "dense" else None, x)
        session = ort_session(path, args.threads, models[name][1])
        runners[name] = session_runner(session, {session.get_inputs()[0].name: x})
    progress(f"block: timing {args.repeats_for('block')} interleaved rounds")
    times = interleaved_times(runners, args.repeats_for("block"))
    labels = {0.5: "LBB d=0.5 vs dense bottleneck 256/128 64x64", 0.1: "LBB d=0.1 vs dense bottleneck 256/128 64x64"}
    comparisons = [compare("block", labels[0.5], times, "lbb-0.5", "dense-0.5", BLOCK_TARGET, density=0.5),
                   compare("block", labels[0.1], times, "lbb-0.1", "dense-0.5", density=0.1)]
    pairs = [(labels[0.5], "lbb-0.5", "dense-0.5", BLOCK_TARGET), (labels[0.1], "lbb-0.1", "dense-0.5", None)]
    return comparisons, budgets(args, models, pairs, "block")


def _e2e_runners(args, library: str, work: Path, x: np.ndarray) -> tuple[dict, list, dict]:
    """Export (and quantize / compile) the end-to-end contenders; returns (runners, TVM backend names,
    ORT models as name -> (path, custom-op library or None, input))."""
    from models import export_network, quantize_int8, tvm_runner

    stacks = args.stacks
    paths = {}
    for density in E2E_TARGETS:
        progress(f"e2e: exporting LBRN-S {stacks} stacks, density {density:g} (TernaryConv)")
        paths[f"lbrn-s-{density:g}"] = export_network("lbrn-s", work / f"lbrn-s-{density:g}.onnx", stacks=stacks,
                                                      density=density)
    progress(f"e2e: exporting LBRN-S {stacks} stacks as plain Conv (--ops standard)")
    paths["lbrn-s-plain"] = export_network("lbrn-s", work / "lbrn-s-plain.onnx", ops="standard", stacks=stacks)
    progress(f"e2e: exporting SHN {stacks} stacks")
    paths["shn-fp32"] = export_network("shn", work / "shn.onnx", ops="standard", stacks=stacks)
    progress("e2e: SHN int8 static quantization (calibrating on random images)")
    paths["shn-int8"] = quantize_int8(paths["shn-fp32"], work / "shn-int8.onnx", x.shape, args.calibration_images)
    ternary = {f"lbrn-s-{density:g}" for density in E2E_TARGETS}  # need our kernel library
    runners, models = {}, {}
    for name, path in paths.items():
        models[name] = (path, library if name in ternary else None, x)
        session = ort_session(path, args.threads, models[name][1])
        runners[name] = session_runner(session, {session.get_inputs()[0].name: x})
    tvm_names = []
    if not args.skip_tvm:
        try:
            import tvm  # noqa: F401
        except ImportError:
            progress("e2e: apache-tvm is not installed, skipping the TVM backend")
        else:
            for density in E2E_TARGETS:
                name = f"lbrn-s-{density:g}-tvm"
                runners[name] = tvm_runner(paths[f"lbrn-s-{density:g}"], work / name, args.threads, x)
                tvm_names.append(name)
    return runners, tvm_names, models


def run_e2e(args, library: str, work: Path) -> tuple[list, list]:
    """LBRN-S (each backend) vs SHN fp32, SHN int8 and LBRN-S as plain Conv; targets on the best backend."""
    x = np.random.default_rng(0).standard_normal((1, 3, E2E_SIZE, E2E_SIZE)).astype(np.float32)
    runners, tvm_names, models = _e2e_runners(args, library, work, x)
    progress(f"e2e: timing {len(runners)} models, {args.repeats_for('e2e')} interleaved rounds")
    times = interleaved_times(runners, args.repeats_for("e2e"), warmup=1)
    results = []
    for density, target in E2E_TARGETS.items():
        backends = [f"lbrn-s-{density:g}"] + [n for n in tvm_names if n.startswith(f"lbrn-s-{density:g}-")]
        best = min(backends, key=lambda n: float(np.median(times["wall"][n])))
        baselines = [("shn-fp32", "SHN fp32", target, None),
                     ("lbrn-s-plain", "LBRN-S plain Conv", 1 / PLAIN_SPEEDUP, f">= {PLAIN_SPEEDUP:g}x faster"),
                     ("shn-int8", "SHN int8 (ORT QDQ)", None, None)]
        for subject in backends:
            engine = "TVM" if subject.endswith("-tvm") else "ORT"
            label = f"LBRN-S{args.stacks} d={density:g} {engine}"
            for baseline, baseline_label, goal, goal_text in baselines:
                if goal is not None and subject != best:
                    goal, goal_text = None, "(not best backend)"
                results.append(compare("e2e", f"{label} vs {baseline_label}", times, subject, baseline, goal,
                                       goal_text, density=density))
    pairs = [(f"LBRN-S{args.stacks} d={density:g} ORT vs {baseline_label}", f"lbrn-s-{density:g}", baseline, goal)
             for density, target in E2E_TARGETS.items()
             for baseline, baseline_label, goal in (("shn-fp32", "SHN fp32", target),
                                                    ("lbrn-s-plain", "LBRN-S plain Conv", 1 / PLAIN_SPEEDUP))]
    return results, budgets(args, models, pairs, "e2e")


def run_int8(args, library: str, work: Path) -> tuple[list, list]:
    """QTernaryConv vs QLinearConv, and LBRN-S int8 vs SHN int8 / fp32, all in ORT; one calibration set."""
    from lbdeploy.exporters.calibration import CalibrationOptions, load_calibration
    from models import export_network, quantize_network

    results, models = [], {}
    runners = {}
    for density in INT8_KERNEL_TARGETS:
        ternary, dense, x = qsessions(128, 128, 64, density, args.threads, library)
        runners[f"qternary-{density:g}"] = session_runner(ternary, {"X": x})
        runners[f"qlinearconv-{density:g}"] = session_runner(dense, {"X": x})
    rounds = 5 * args.repeats_for("int8")
    progress(f"int8: timing the uint8 convs, {rounds} interleaved rounds")
    times = interleaved_times(runners, rounds)
    for density, target in INT8_KERNEL_TARGETS.items():
        results.append(compare("int8", f"QTernaryConv NHWC d={density:g} vs QLinearConv NHWC 128 3x3 64x64", times,
                               f"qternary-{density:g}", f"qlinearconv-{density:g}",
                               target, density=density))
    stacks = args.stacks
    progress(f"int8: {args.calibration_images} synthetic calibration images for every int8 model")
    images = load_calibration(CalibrationOptions(images=args.calibration_images), (E2E_SIZE, E2E_SIZE),
                              {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}).calibration
    paths = {}
    for density in INT8_E2E_TARGETS:
        progress(f"int8: LBRN-S {stacks} stacks, density {density:g}: export, calibrate, quantize")
        paths[f"lbrn-s-int8-{density:g}"] = quantize_network("lbrn-s", work / f"lbrn-s-int8-{density:g}.onnx", images,
                                                             stacks=stacks, density=density)
    progress(f"int8: SHN {stacks} stacks: export, calibrate, quantize; and fp32")
    paths["shn-int8"] = quantize_network("shn", work / "shn-int8-same.onnx", images, stacks=stacks)
    paths["shn-fp32"] = export_network("shn", work / "shn-fp32-int8group.onnx", ops="standard", stacks=stacks)
    x = images[:1]
    runners = {}
    for name, path in paths.items():
        models[name] = (path, library if name.startswith("lbrn") else None, x)
        session = ort_session(path, args.threads, models[name][1])
        runners[name] = session_runner(session, {session.get_inputs()[0].name: x})
    progress(f"int8: timing {len(runners)} models, {args.repeats_for('int8')} interleaved rounds")
    times = interleaved_times(runners, args.repeats_for("int8"), warmup=1)
    pairs = []
    for density, (vs_int8, vs_fp32) in INT8_E2E_TARGETS.items():
        subject = f"lbrn-s-int8-{density:g}"
        for baseline, label, target in (("shn-int8", "SHN int8 (ORT QDQ)", vs_int8), ("shn-fp32", "SHN fp32", vs_fp32)):
            name = f"LBRN-S{stacks} int8 d={density:g} vs {label}"
            results.append(compare("int8", name, times, subject, baseline, target, density=density))
            pairs.append((name, subject, baseline, target))
    # ONNX Runtime prepacks QLinearConv weights, so its trace does not tell 3x3 from 1x1 int8 convs:
    # the Amdahl bound is taken against SHN fp32 only; every int8 model gets its op-type shares.
    names = sorted(models)
    progress(f"int8: profiling {', '.join(names)} (ORT profiler, interleaved: where the time goes)")
    op_times = profile_interleaved(models, args.threads, runs=2 if args.quick else 10)
    bounds = [make_budget(name, op_times[subject], op_times[baseline], target)
              for name, subject, baseline, target in pairs if baseline == "shn-fp32"]
    bounds += [OpShares(f"{name} op time", op_times[name].shares(), sum(op_times[name].ops.values()))
               for name in names if name != "shn-fp32"]
    return results, bounds


def run_saliency(args, library: str, work: Path) -> tuple[list, list]:
    """CPD-LB (TernaryConv, density 0.5) vs CPD (dense 3x3 convs) on each backbone, full size, in ORT.

    No target: the paper reports CPD-LB's accuracy and FLOPs (Table 10), not its speed.
    """
    from models import export_network

    size, width = args.saliency_size, args.saliency_width
    shape = f"{size}x{size}" if width is None else f"{size}x{size}, width {width}"
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    runners = {}
    for backbone in SALIENCY_BACKBONES:
        for arch in ("cpd", "cpd-lb"):
            name = f"{arch}-{backbone}"
            progress(f"saliency: exporting {arch} ({backbone}, {shape})")
            path = export_network(arch, work / f"{name}.onnx", ops="custom" if arch == "cpd-lb" else "standard",
                                  size=size, task="saliency", backbone=backbone,
                                  **({} if width is None else {"width": width}))
            session = ort_session(path, args.threads, library if arch == "cpd-lb" else None)
            runners[name] = session_runner(session, {session.get_inputs()[0].name: x})
    progress(f"saliency: timing {len(runners)} models, {args.repeats_for('saliency')} interleaved rounds")
    times = interleaved_times(runners, args.repeats_for("saliency"), warmup=1)
    return [compare("saliency", f"CPD-LB vs CPD ({backbone}, {shape}) ORT", times,
                    f"cpd-lb-{backbone}", f"cpd-{backbone}", density=0.5) for backbone in SALIENCY_BACKBONES], []


def save_advice(results: list, machine: dict, path: Path) -> None:
    """Write the density-advice file read by `lbdeploy inspect` (lbdeploy/density_advice.py)."""
    single = machine["threads"] == 1  # then ORT computes on the calling thread: CPU time is robust to load
    kernel = [{"density": c.density, "ratio": round(c.ratio, 4), "ratio_of_mins": round(c.ratio_of_mins, 4),
               "cpu_ratio_of_mins": round(c.cpu_ratio_of_mins, 4) if single else None,
               "ternary_ms": round(c.subject_ms, 3), "dense_ms": round(c.baseline_ms, 3),
               "ternary_min_ms": round(c.subject_min_ms, 3), "dense_min_ms": round(c.baseline_min_ms, 3)}
              for c in results if c.group == "kernel"]
    e2e = [{"comparison": c.name, "ratio": round(c.ratio, 4), "ratio_of_mins": round(c.ratio_of_mins, 4)}
           for c in results if c.group == "e2e" and c.baseline == "shn-fp32" and c.target is not None]
    repeats = max((c.repeats for c in results if c.group == "kernel"), default=0)
    data = {"machine": machine, "kernel": {"shape": "128->128, 3x3, 64x64, batch 1", "repeats": repeats,
                                           "ratios": kernel}, "e2e": e2e}
    path.write_text(json.dumps(data, indent=2) + "\n")
    progress(f"wrote the density advice to {path}")


def _parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=GROUPS, action="append", help="run only this group (repeatable)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of every engine")
    parser.add_argument("--repeats", type=int, help="interleaved rounds of every group (default: 50 kernel, "
                        "30 block, 10 e2e, 10 saliency; --quick: 3, 3, 2, 2)")
    parser.add_argument("--quick", action="store_true", help="a few rounds only (smoke test, not a measurement)")
    parser.add_argument("--stacks", type=int, default=E2E_STACKS, help="hourglass stacks of the e2e models")
    parser.add_argument("--saliency-size", type=int, default=SALIENCY_SIZE,
                        help="input side of the saliency models (a multiple of 32)")
    parser.add_argument("--saliency-width", type=int, default=None,
                        help="backbone width of the saliency models (default: the paper's; smaller for smoke tests)")
    parser.add_argument("--calibration-images", type=int, default=4,
                        help="int8 calibration images (random for e2e's SHN int8, synthetic for the int8 group)")
    parser.add_argument("--skip-tvm", action="store_true", help="leave out the TVM backend")
    parser.add_argument("--choice-precision", choices=("fp32", "int8"), action="append",
                        help="the choice group's precision (repeatable; default both)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--save-advice", action="store_true",
                        help=f"measure the kernel at {ADVICE_DENSITIES} and write {ADVICE_FILE.relative_to(REPO)}")
    parser.add_argument("--library", help="libternary_ort.so to use (default: build for this host)")
    args = parser.parse_args(argv)
    defaults = dict(zip(GROUPS, REPEATS["quick" if args.quick else "full"]))
    args.repeats_for = lambda group: args.repeats or defaults[group]
    args.groups = [g for g in GROUPS if not args.only or g in args.only]
    if args.save_advice and "kernel" not in args.groups:
        parser.error("--save-advice needs the kernel group (add --only kernel)")
    return args


def main(argv=None) -> int:
    """Run the selected groups, print the table, write --json / --save-advice.

    Returns:
        0: a missed target is a result, reported in the table, not an error.
    """
    from lbdeploy.kernels.build import build_ort_library

    args = _parse(argv)
    machine = machine_description(args.threads)  # before our own load
    if not args.library:
        progress("building the TernaryConv kernel library (cached)")
    library = args.library or str(build_ort_library())
    machine["kernel_library"] = library  # the build cache folder names the source hash
    progress(f"kernel library: {library}")
    results, bounds = [], []
    with tempfile.TemporaryDirectory(prefix="lbdeploy-bench-") as tmp:
        for group in args.groups:
            if group == "kernel":
                comparisons, group_bounds = run_kernel(args, library)
            elif group == "block":
                comparisons, group_bounds = run_block(args, library, Path(tmp))
            elif group == "int8":
                comparisons, group_bounds = run_int8(args, library, Path(tmp))
            elif group == "saliency":
                comparisons, group_bounds = run_saliency(args, library, Path(tmp))
            elif group == "choice":
                from choice import run_choice

                comparisons, group_bounds = run_choice(args, library, Path(tmp))
            else:
                comparisons, group_bounds = run_e2e(args, library, Path(tmp))
            results += comparisons
            bounds += group_bounds
    machine["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print(describe_machine(machine))
    print("wall clock per inference, batch 1: median (min) over interleaved rounds; ratio = subject / baseline")
    print(header(cpu=args.threads == 1))
    for group in args.groups:
        for comparison in (c for c in results if c.group == group):
            print(format_comparison(comparison, cpu=args.threads == 1))
    if bounds:
        print("\nwhere the time goes (ORT profiler, kernel time per node; bench/budget.py): the ORT rows' Amdahl bound")
        for bound in bounds:
            print(bound.line() if isinstance(bound, OpShares) else format_budget(bound))
    if args.quick:
        print("--quick: too few rounds to measure anything; for a smoke test only")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "quick": args.quick,
                                         "comparisons": [c.to_dict() for c in results],
                                         "budgets": [b.to_dict() for b in bounds]}, indent=2) + "\n")
        progress(f"wrote {args.json}")
    if args.save_advice:
        save_advice(results, machine, ADVICE_FILE)
    return 0


if __name__ == "__main__":
    from lbdeploy.errors import LbdeployError

    try:
        sys.exit(main())
    except LbdeployError as err:  # one line, like the CLI
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
