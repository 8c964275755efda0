"""What a ternary density buys: measured TernaryConv speed next to the paper's accuracy per density.

`lbdeploy inspect` shows it for models with ternary layers. Two sources are combined:

- speed: lbdeploy/data/bench_results.json, written by `bench/run.py --only kernel --save-advice
  --threads 1` (TernaryConv time / ONNX Runtime dense fp32 Conv time per density, on the machine it
  records; one thread so that CPU time can be used, which other load on the machine barely moves);
- accuracy: the paper's Table 2 (Liu et al., Neurocomputing 2021): PCKh@0.5 of LBRN-S on the
  MPII validation set per sparsity level (the fraction of non-zero 3x3 weights), flat within
  0.4 points from 0.1 to 0.9.

To refresh the speed side on a new machine, rerun the bench command above; to add another
accuracy table, add a dict like `PAPER_TABLE2` and a row in `format_advice`.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS_FILE = Path(__file__).resolve().parent / "data" / "bench_results.json"
REFRESH_COMMAND = "python bench/run.py --only kernel --save-advice --threads 1"

# Paper Table 2: density -> PCKh@0.5 total, LBRN-S, MPII validation set.
PAPER_TABLE2 = {0.1: 87.2, 0.2: 87.0, 0.3: 87.4, 0.4: 87.4, 0.5: 87.1, 0.6: 87.2, 0.7: 87.4, 0.8: 87.1, 0.9: 87.2}
PAPER_SOURCE = "Liu et al. 2021, Table 2: PCKh@0.5 of LBRN-S on MPII val"


def load_results(path: Path | None = None) -> dict | None:
    """The saved benchmark results (default: the file shipped in the package); None if absent or unreadable."""
    path = Path(path) if path else RESULTS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("kernel", {}).get("ratios") else None


def density_advice(model_density: float, results: dict | None) -> dict:
    """Speed and accuracy per density, and what this model's density costs.

    Args:
        model_density: the model's fraction of non-zero ternary weights.
        results: `load_results()` output, or None when no measurement is available.
    Returns:
        {"model_density", "rows": [{"density", "time_ratio", "pckh_paper"}], "paper", "measured_on",
        "kernel_shape", "e2e", "best", "model", "refresh"}; "model" is the measured density nearest
        to the model's, "best" the fastest measured; rows cover the measured densities (or Table 2's
        when nothing was measured), time_ratio = TernaryConv / dense fp32 Conv time of the fastest
        run of each (the run least disturbed by other load), in CPU time when measured with one
        thread (robust on a shared machine); median_ratio the ratio of the wall-clock medians.
    """
    advice = {"model_density": round(model_density, 4), "paper": PAPER_SOURCE, "refresh": REFRESH_COMMAND,
              "measured_on": None, "kernel_shape": None, "repeats": None, "e2e": [], "best": None, "model": None}
    if results is None:
        advice["rows"] = [{"density": d, "time_ratio": None, "pckh_paper": p} for d, p in PAPER_TABLE2.items()]
        return advice
    machine = results.get("machine", {})
    threads = machine.get("threads", "?")
    threads_text = "1 thread, CPU time" if threads == 1 else f"{threads} threads, wall clock"
    advice["measured_on"] = (f"{machine.get('cpu', '?')}, {threads_text}, onnxruntime "
                             f"{machine.get('onnxruntime', '?')}, {machine.get('date', '?')}")
    advice["kernel_shape"] = results["kernel"].get("shape")
    advice["repeats"] = results["kernel"].get("repeats")
    advice["e2e"] = results.get("e2e", [])
    rows = [{"density": r["density"], "time_ratio": r.get("cpu_ratio_of_mins") or r.get("ratio_of_mins") or r["ratio"],
             "median_ratio": r["ratio"],
             "pckh_paper": PAPER_TABLE2.get(round(r["density"], 1))}
            for r in sorted(results["kernel"]["ratios"], key=lambda r: r["density"])]
    advice["rows"] = rows
    fastest = min(rows, key=lambda r: r["time_ratio"])
    nearest = min(rows, key=lambda r: abs(r["density"] - model_density))
    advice["best"] = {"density": fastest["density"], "time_ratio": fastest["time_ratio"]}
    advice["model"] = {"density": nearest["density"], "time_ratio": nearest["time_ratio"]}
    return advice


def format_advice(advice: dict) -> list[str]:
    """A few lines for the `lbdeploy inspect` table."""
    rows = advice["rows"]
    lines = [f"density advice       accuracy is flat in density ({advice['paper']}):"]
    lines.append("  density            " + " ".join(f"{r['density']:>6g}" for r in rows))
    lines.append("  PCKh@0.5 (paper)   " + " ".join(f"{r['pckh_paper']:>6}" if r["pckh_paper"] else f"{'-':>6}"
                                                    for r in rows))
    if advice["measured_on"] is None:
        lines.append(f"  no speed measurement shipped; run `{advice['refresh']}`")
        return lines
    lines.append("  TernaryConv time   " + " ".join(f"{r['time_ratio']:>5.2f}x" for r in rows)
                 + "  (/ dense fp32 Conv)")
    lines.append(f"  measured: {advice['kernel_shape']}, fastest of {advice['repeats'] or 'N'} runs each,")
    lines.append(f"            {advice['measured_on']}")
    best, model = advice["best"], advice["model"]
    lines.append(f"  this model: density {advice['model_density']:g} -> {model['time_ratio']:.2f}x (measured at "
                 f"{model['density']:g}); fastest: density {best['density']:g} -> {best['time_ratio']:.2f}x")
    for result in advice["e2e"]:
        lines.append(f"  end to end: {result['comparison']}: {result['ratio']:.2f}x (medians)")
    return lines
