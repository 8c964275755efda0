"""Static estimate of our NEON kernels on ARM cores with llvm-mca: cycles per output element.

Timing under qemu means nothing, so this script compiles the hot inner loops of the NEON kernels
(bench/mca/*.cc: the float and the int8 TernaryConv tap loop and combine step, taken from the real
tile code; dense fp32 and int8 GEMM micro-kernels as comparison) with aarch64-linux-gnu-g++ -O3 -S,
cuts each loop out of the assembly and runs `llvm-mca -mtriple=aarch64 -mcpu=CPU` on it. It is a
STATIC ESTIMATE from LLVM's scheduling models (no caches, no branch mispredictions, no memory
bandwidth, no loop or call overhead outside the loop), not a measurement.

Cycles per output element of a 128 -> 128 3x3 conv (K = 1152):
  * ternary: (tap-list entries x cycles per tap + pattern-combine adds x cycles per add) over all
    steps of the real pattern program statistics (blocks of 4 channels, chunks of input channels
    as the kernel cuts them), divided by (output channels x positions per tile);
  * dense: K / (k per iteration) x cycles per iteration / outputs per iteration.

The int8 requantize epilogue (qepilogue_kernel.h, 4 outputs per iteration) is listed per output
element too: it runs once per output, after all the taps.

    python bench/llvm_mca.py                 # cortex-a72, cortex-a55, cortex-a76, neoverse-n1; densities 0.5, 0.1
    python bench/llvm_mca.py --cpus cortex-a72 --densities 0.5
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SOURCES = REPO / "bench" / "mca"
CORE = REPO / "lbdeploy" / "kernels" / "core"
CPUS = ("cortex-a72", "cortex-a55", "cortex-a76", "neoverse-n1")
DOTPROD_CPUS = ("cortex-a55", "cortex-a76", "neoverse-n1")  # Cortex-A72/A57 have no SDOT
COMPILER = "aarch64-linux-gnu-g++"
CIN = COUT = 128
TAPS = 9  # 3x3
BLOCK = 4  # output channels per pattern block (lbdeploy/kernels/core/patterns.h)
INT16_TAP_LIMIT = 128  # non-zero weights per channel and step in the int8 kernel (kQMaxKernelTaps)


@dataclass(frozen=True)
class Loop:
    """One loop to analyse: function in a bench/mca source and what one iteration does."""

    source: str
    function: str
    outputs: int  # output elements (positions x channels) one iteration serves; 0 for ternary loops
    k: int  # reduction steps per iteration (dense), taps per iteration (ternary tap loops) or 1
    dotprod: bool = False
    largest: bool = False  # the function's largest innermost loop (the tap loop's two-tap body), not its smallest


LOOPS = {
    "ternary fp32 tap": Loop("ternary_fp32_neon.cc", "mca_tap_loop", 0, 2, largest=True),
    "ternary fp32 combine": Loop("ternary_fp32_neon.cc", "mca_combine_loop", 0, 1),
    "ternary int8 tap": Loop("ternary_int8_neon.cc", "mca_tap_loop", 0, 2, largest=True),
    "ternary int8 combine": Loop("ternary_int8_neon.cc", "mca_combine_loop", 0, 1),
    "int8 requantize epilogue": Loop("ternary_int8_neon.cc", "mca_requantize_loop", 4, 1),
    "dense fp32": Loop("dense_gemm_neon.cc", "mca_dense_fp32", 64, 1),
    "dense int8 (smull/sadalp)": Loop("dense_gemm_neon.cc", "mca_dense_int8", 16, 16),
    "dense int8 (sdot)": Loop("dense_gemm_neon.cc", "mca_dense_int8_sdot", 64, 4, dotprod=True),
}
# Positions of the NEON tiles (2 rows x 2 vectors): fp32 4 lanes, int8 kernel 8 int16 lanes;
# and input channels per step (fp32: the lane layout's 24 KiB chunk at 64x64 = 2 chunks of 64).
TILE_POSITIONS = {"fp32": 16, "int8": 32}
FP32_CHUNK = 64
INT8_CACHE_CHUNK = 56  # the int8 flat tile's 24 KiB limit at 64x64; the exact-int16 rule may cut it


def parse_mca(text: str) -> float:
    """Cycles per iteration from llvm-mca's summary (Total Cycles / Iterations).

    Raises:
        ValueError: the text has no llvm-mca summary.
    """
    iterations = re.search(r"^Iterations:\s+(\d+)", text, re.M)
    cycles = re.search(r"^Total Cycles:\s+(\d+)", text, re.M)
    if not iterations or not cycles:
        raise ValueError("not an llvm-mca summary (no 'Iterations:' / 'Total Cycles:' lines)")
    return int(cycles.group(1)) / int(iterations.group(1))


def extract_loop(assembly: str, function: str, largest: bool = False) -> list[str]:
    """The instructions of the innermost loop of `function` in GCC aarch64 assembly: from a label to
    the last conditional branch back to it, without directives and labels (largest: the largest of
    the function's loops, for functions with sibling loops).

    Raises:
        ValueError: the function or a backward branch in it is missing.
    """
    match = re.search(rf"^{function}:\n(.*?)^\s*\.size\s+{function},", assembly, re.S | re.M)
    if not match:
        raise ValueError(f"function {function} not in the assembly")
    lines = match.group(1).splitlines()
    labels = {line.strip()[:-1]: i for i, line in enumerate(lines) if re.match(r"^\.L\w+:$", line.strip())}
    loops = []
    for i, line in enumerate(lines):
        branch = re.match(r"^\s*(b\.\w+|bne|cbnz|cbz|tbnz|tbz)\s.*?(\.L\w+)$", line)
        if branch and branch.group(2) in labels and labels[branch.group(2)] < i:
            loops.append((i - labels[branch.group(2)], labels[branch.group(2)], i))
    if not loops:
        raise ValueError(f"no loop in {function}")
    _, start, end = max(loops) if largest else min(loops)
    body = [line.strip() for line in lines[start + 1 : end + 1]]
    return [line for line in body if line and not line.startswith((".", "//")) and not line.endswith(":")]


def compile_source(source: str, dotprod: bool) -> str:
    """GCC -O3 aarch64 assembly of a bench/mca source."""
    arch = ["-march=armv8.2-a+dotprod"] if dotprod else []
    done = subprocess.run(
        [COMPILER, "-std=c++17", "-O3", "-S", *arch, f"-I{CORE}", str(SOURCES / source), "-o", "-"],
        capture_output=True, text=True, check=True,
    )
    return done.stdout


def run_mca(instructions: list[str], cpu: str, iterations: int = 200) -> float:
    """llvm-mca's cycles per iteration of a loop body on `cpu`."""
    with tempfile.NamedTemporaryFile("w", suffix=".s") as handle:
        handle.write("\n".join(instructions) + "\n")
        handle.flush()
        done = subprocess.run(["llvm-mca", "-mtriple=aarch64", f"-mcpu={cpu}", f"-iterations={iterations}",
                               handle.name], capture_output=True, text=True, check=True)
    return parse_mca(done.stdout)


def pattern_statistics(density: float, chunk_limit: int, int16: bool, seed: int = 0) -> tuple[int, int]:
    """(tap-list entries, combine adds) of the pattern program of a 128 -> 128 3x3 layer with
    ternary weights of `density`, as lbdeploy/kernels/core/plan.cc builds it: blocks of 4 output
    channels, near-equal chunks of at most chunk_limit input channels (int16: also at most 128
    non-zero weights per channel and chunk, as qternary_conv.cc chooses), each tap in the list of
    its joint pattern; a non-empty pattern costs one add per non-zero digit of the block."""
    rng = np.random.default_rng(seed)
    shape = (COUT, CIN * TAPS)
    w = ((rng.random(shape) < density) * np.where(rng.random(shape) < 0.5, -1, 1)).astype(np.int64)
    for limit in range(min(chunk_limit, CIN), 0, -1):
        chunk = -(-CIN // -(-CIN // limit))
        starts = range(0, CIN * TAPS, chunk * TAPS)
        if not int16 or all((w[:, s : s + chunk * TAPS] != 0).sum(axis=1).max() <= INT16_TAP_LIMIT for s in starts):
            break
    taps = combines = 0
    powers = 3 ** np.arange(BLOCK)
    for b in range(0, COUT, BLOCK):
        codes = ((w[b : b + BLOCK] + 1) * powers[:, None]).sum(axis=0)  # 40 = all zero; c <-> 80 - c negated
        canonical = np.minimum(codes, 80 - codes)
        for s in starts:
            patterns = canonical[s : s + chunk * TAPS]
            used = np.unique(patterns[patterns != 40])
            taps += int((patterns != 40).sum())
            combines += int(sum((np.array(np.unravel_index(p, (3,) * BLOCK)) != 1).sum() for p in used))
    return taps, combines


def estimate(cpus, densities) -> list[dict]:
    """One row per (kernel, cpu): llvm-mca cycles per iteration and per output element."""
    assembly = {}
    cycles = {}
    for name, loop in LOOPS.items():
        key = (loop.source, loop.dotprod)
        if key not in assembly:
            assembly[key] = compile_source(loop.source, loop.dotprod)
        body = extract_loop(assembly[key], loop.function, loop.largest)
        for cpu in cpus:
            if loop.dotprod and cpu not in DOTPROD_CPUS:
                continue
            cycles[name, cpu] = run_mca(body, cpu)
    rows = []
    k = CIN * TAPS
    for cpu in cpus:
        for name, loop in LOOPS.items():
            if loop.outputs and (name, cpu) in cycles:
                # Dense loops cover loop.k of the K reduction steps; the epilogue runs once per output.
                steps = k / loop.k if name.startswith("dense") else 1
                per_output = steps * cycles[name, cpu] / loop.outputs
                rows.append({"cpu": cpu, "kernel": name, "cycles_per_iteration": cycles[name, cpu],
                             "cycles_per_output": per_output})
        for kind in ("fp32", "int8"):
            tap = cycles[f"ternary {kind} tap", cpu] / LOOPS[f"ternary {kind} tap"].k  # per tap
            combine = cycles[f"ternary {kind} combine", cpu] / BLOCK
            for density in densities:
                limit = FP32_CHUNK if kind == "fp32" else INT8_CACHE_CHUNK
                taps, combines = pattern_statistics(density, limit, int16=kind == "int8")
                per_output = (taps * tap + combines * combine) / (COUT * TILE_POSITIONS[kind])
                rows.append({"cpu": cpu, "kernel": f"ternary {kind} d={density:g}", "cycles_per_iteration": tap,
                             "cycles_per_output": per_output})
    return rows


def format_rows(rows: list[dict]) -> str:
    """A markdown table: cycles per output element per kernel (rows) and cpu (columns)."""
    cpus = list(dict.fromkeys(r["cpu"] for r in rows))
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    value = {(r["kernel"], r["cpu"]): r["cycles_per_output"] for r in rows}
    lines = ["| kernel (128->128 3x3, cycles per output element) | " + " | ".join(cpus) + " |",
             "|---|" + "---|" * len(cpus)]
    for kernel in kernels:
        cells = [f"{value[kernel, cpu]:.2f}" if (kernel, cpu) in value else "n/a" for cpu in cpus]
        lines.append(f"| {kernel} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the estimate table (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", nargs="+", default=list(CPUS))
    parser.add_argument("--densities", type=float, nargs="+", default=[0.5, 0.1])
    args = parser.parse_args(argv)
    for tool in (COMPILER, "llvm-mca"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found (apt-get install g++-aarch64-linux-gnu llvm)", file=sys.stderr)
            return 2
    print("STATIC ESTIMATE (llvm-mca scheduling models; no caches, mispredictions or memory traffic), "
          "not a measurement.")
    print(format_rows(estimate(args.cpus, args.densities)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
