"""Static cost of the CUDA TernaryConv kernel from its SASS: per tap, and as density changes.

    python bench/sass_count.py [--arch sm_87] [--density 0.1 0.5] [--map 32]

compiles lbdeploy/kernels/cuda/ternary_conv.cu with nvcc for `--arch`, dumps the SASS with
cuobjdump, and finds each conv kernel's loops (a backward branch and the instructions from its
target up to it). Per kernel it reports:

- the hot tap loop (the loop with the most adds; no barrier, no inner loop): its instructions per
  non-zero tap of one output value (one FADD, or half an HADD2), its shared loads (LDS) per tap, and
  the shared-memory wavefronts (transactions) one warp's LDS needs, from the lanes' addresses
  (LANE_POSITIONS mirrors Lane<T>::position of the kernel) and each load's width: 4 per LDS.128 is
  conflict-free; more means bank conflicts;
- a dynamic instruction estimate per output value for a 128->128 3x3 layer on a --map x --map map
  at each --density: the loops' bodies times how often a thread runs them (tap lists drawn at that
  density, the kernel's plan mirrored in `plan`), plus, as fixed work, the staging loop per staged
  element and every instruction outside the loops once per list walk (an upper bound). The ratio
  t(d_low)/t(d_high) says how far the fixed work keeps the time from following the density.

No GPU is needed. Needs nvcc and cuobjdump (+ nvdisasm; pip install nvidia-cuda-cuobjdump
nvidia-cuda-nvdisasm, or a CUDA toolkit).

To extend: add an opcode to ADD_OPCODES (e.g. an int8 path's IDP4A) and the report counts it.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
KERNEL_CU = REPO / "lbdeploy" / "kernels" / "cuda" / "ternary_conv.cu"
# opcode -> output taps one such add sums (HADD2: two fp16 lanes). ptxas also issues fp16 pair adds as
# HFMA2.MMA Rd, Ra, 1, 1, Rc (Ra * 1 + Rc) to balance its pipes; those count when multiplying by 1.
ADD_OPCODES = {"FADD": 1, "HADD2": 2, "HFMA2": 2}
LOAD_OPCODES = ("LDS",)
BARRIER_OPCODES = ("BAR",)
# The kernel's constants (ternary_conv.cu) that the estimate needs.
THREADS, OC_WARP, PIXELS, POSITIONS, MAX_TW, MAX_CHANNEL_CHUNK, SMEM_BUDGET = 256, 8, 16, 512, 32, 8, 48 * 1024
# Byte offset of lane L's first position in the staged tile (Lane<T>::position(L, 0) * sizeof(T)).
LANE_POSITIONS = {"float": lambda lane: 16 * lane, "half": lambda lane: 16 * lane}
_LDS_ADDRESS = re.compile(r"\[R\d+(?:\+(0x[0-9a-f]+))?\]")
_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
_FUNCTION = re.compile(r"Function : (\S+)")


@dataclass(frozen=True)
class Instruction:
    address: int
    opcode: str
    operands: str

    @property
    def base(self) -> str:
        """The opcode without its modifiers (FADD.FTZ -> FADD)."""
        return self.opcode.split(".")[0]

    @property
    def taps(self) -> int:
        """Output taps this instruction adds (0 unless it is an add; an FMA counts only as x * 1 + y)."""
        if self.base == "HFMA2" and ", 1, 1," not in self.operands:
            return 0
        return ADD_OPCODES.get(self.base, 0)


@dataclass(frozen=True)
class Loop:
    function: str
    start: int
    end: int
    body: tuple[Instruction, ...]

    @property
    def taps(self) -> int:
        """Non-zero taps of one output value this loop body handles (adds, HADD2 counting two)."""
        return sum(i.taps for i in self.body)

    @property
    def instructions_per_tap(self) -> float:
        return len(self.body) / self.taps

    @property
    def shared_loads(self) -> list[Instruction]:
        """The loop's shared-memory loads."""
        return [i for i in self.body if i.base in LOAD_OPCODES]

    @property
    def global_loads(self) -> int:
        """The loop's global loads (the tap offsets: one 16-byte broadcast load per 4 taps of a list)."""
        return sum(i.base == "LDG" for i in self.body)


def load_bytes(instruction: Instruction) -> int:
    """Bytes one lane reads with an LDS (LDS.128: 16, LDS.64: 8, LDS.U16: 2, LDS: 4)."""
    for suffix, size in ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1)):
        if suffix in instruction.opcode:
            return size
    return 4


def wavefronts(lane_bytes: list[int], width: int) -> int:
    """Shared-memory wavefronts (transactions) for one warp load of `width` bytes per lane at these byte
    addresses: 32 banks of 4 bytes, one wavefront serving up to 128 bytes; a wider load is split into
    phases of 128 / width lanes, each needing as many wavefronts as its most-shared bank holds distinct
    words (a broadcast of one word costs nothing extra)."""
    lanes_per_phase = max(1, 128 // width)
    total = 0
    for first in range(0, len(lane_bytes), lanes_per_phase):
        banks: dict[int, set[int]] = {}
        for address in lane_bytes[first:first + lanes_per_phase]:
            for word in range(address // 4, (address + width - 1) // 4 + 1):
                banks.setdefault(word % 32, set()).add(word)
        total += max(len(words) for words in banks.values())
    return total


def loop_wavefronts(loop: "Loop", element: str) -> int:
    """Wavefronts of all the shared loads of one pass through `loop`, for a warp of lanes placed as the
    kernel places them (the tap offset itself is the same for every lane, so it does not change them)."""
    total = 0
    for load in loop.shared_loads:
        match = _LDS_ADDRESS.search(load.operands)
        immediate = int(match.group(1), 16) if match and match.group(1) else 0
        total += wavefronts([LANE_POSITIONS[element](lane) + immediate for lane in range(32)], load_bytes(load))
    return total


def find_tool(name: str) -> str:
    """Path of a CUDA tool: $PATH, /usr/local/cuda/bin, or the nvidia pip wheels' bin folders."""
    candidates = [shutil.which(name), f"/usr/local/cuda/bin/{name}"]
    try:
        import nvidia

        candidates += [str(Path(p) / sub / "bin" / name) for p in nvidia.__path__ for sub in ("cu13", "cuda_nvcc")]
    except ImportError:
        pass
    for candidate in filter(None, candidates):
        if Path(candidate).is_file():
            return candidate
    raise SystemExit(f"{name} not found: install a CUDA toolkit or `pip install nvidia-cuda-cuobjdump "
                     "nvidia-cuda-nvdisasm`")


def compile_sass(arch: str, source: Path = KERNEL_CU) -> str:
    """nvcc -cubin for `arch` (e.g. sm_87), then cuobjdump -sass; returns the SASS listing."""
    nvcc, cuobjdump = find_tool("nvcc"), find_tool("cuobjdump")
    env = dict(os.environ, PATH=f"{Path(find_tool('nvdisasm')).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "ternary_conv.cubin"
        subprocess.run([nvcc, "-cubin", "-O3", "-std=c++17", f"-arch={arch}", str(source), "-o", str(cubin)],
                       check=True, capture_output=True, text=True)
        done = subprocess.run([cuobjdump, "-sass", str(cubin)], check=True, capture_output=True, text=True, env=env)
    return done.stdout


def parse_functions(sass: str) -> dict[str, list[Instruction]]:
    """Function name -> its instructions, from a cuobjdump -sass listing."""
    functions: dict[str, list[Instruction]] = {}
    current = None
    for line in sass.splitlines():
        name = _FUNCTION.search(line)
        if name:
            current = functions.setdefault(name.group(1), [])
            continue
        match = _LINE.search(line)
        if match and current is not None:
            current.append(Instruction(int(match.group(1), 16), match.group(2), match.group(3).strip()))
    return functions


def loops(function: str, code: list[Instruction]) -> list[Loop]:
    """Every loop of a function: a backward BRA and the instructions from its target to it."""
    found = []
    for instruction in code:
        target = re.match(r"(?:`\(\.L_x_\d+\)|0x([0-9a-f]+))", instruction.operands)
        if instruction.base != "BRA" or not target or target.group(1) is None:
            continue
        start = int(target.group(1), 16)
        if start <= instruction.address:
            body = tuple(i for i in code if start <= i.address <= instruction.address)
            found.append(Loop(function, start, instruction.address, body))
    return found


def inner_tap_loops(functions: dict[str, list[Instruction]]) -> list[Loop]:
    """Loops that add taps from shared memory, hold no barrier and contain no other loop."""
    result = []
    for name, code in functions.items():
        every = loops(name, code)
        for loop in every:
            nested = any(o is not loop and loop.start <= o.start and o.end < loop.end for o in every)
            opcodes = {i.base for i in loop.body}
            if loop.taps and opcodes & set(LOAD_OPCODES) and not opcodes & set(BARRIER_OPCODES) and not nested:
                result.append(loop)
    return result


def hottest(tap_loops: list[Loop]) -> dict[str, Loop]:
    """Per function, its inner loop with the most taps per iteration (the unrolled main loop)."""
    best: dict[str, Loop] = {}
    for loop in tap_loops:
        if loop.function not in best or loop.taps > best[loop.function].taps:
            best[loop.function] = loop
    return best


def element_type(mangled: str) -> str | None:
    """'float' or 'half' for a ternary_conv_kernel<T> instance, else None."""
    match = re.search(r"ternary_conv_kernelI(6__half|f)E", mangled)
    return None if not match else ("half" if match.group(1) == "6__half" else "float")


def short_name(mangled: str) -> str:
    """A readable kernel name (ternary_conv_kernel<float>) from the mangled one."""
    element = element_type(mangled)
    return mangled if element is None else f"ternary_conv_kernel<{element}>"


@dataclass(frozen=True)
class Plan:
    """The kernel's LaunchPlan for a kh x kw, stride-1 layer (make_plan in ternary_conv.cu)."""
    tw: int
    rows: int
    pr: int
    chunk: int
    chunks: int


def plan(cin: int, ow: int, kh: int = 3, kw: int = 3) -> Plan:
    """Mirror of make_plan for a square map, stride 1, dilation 1, group 1."""
    tw = 8
    while tw < MAX_TW and tw < ow:
        tw *= 2
    rows = min(POSITIONS // tw, ow)  # square maps: oh = ow
    pr = kw * (rows + kh - 1)
    slack = 4 * POSITIONS if rows * tw < POSITIONS else 0
    chunk = min(MAX_CHANNEL_CHUNK, (SMEM_BUDGET - 8 * pr - slack) // (4 * pr * tw), cin)
    return Plan(tw, rows, pr, chunk, math.ceil(cin / chunk))


@dataclass(frozen=True)
class KernelCost:
    """A conv kernel's code, sorted into the parts the dynamic estimate charges."""
    hot: Loop           # the unrolled tap loop: 16 list entries (taps of every lane position) per pass
    tail: Loop          # the last 0-15 entries of a list, 4 per offset load (LDG)
    staging: Loop       # the costliest staging loop per staged element (one STS each)
    per_chunk: int      # the chunk loop's instructions outside its inner loops (every path: an upper bound)
    per_thread: int     # instructions outside the chunk loop (prologue, epilogue; every path)

    def per_output(self, density: float, cin: int = 128, map_size: int = 32, seed: int = 0) -> float:
        """Dynamic instructions per output value of a cin->cin 3x3 layer at `density` (see the module doc)."""
        p = plan(cin, map_size)
        rng = np.random.default_rng(seed)
        # Tap counts of the + and - lists of every chunk of one warp's OC_WARP channels.
        counts = rng.binomial(p.chunk * 9, density / 2, size=(p.chunks, OC_WARP, 2))
        hot_passes = (counts // 16).sum()
        tail_taps = (counts % 16).sum()
        tail_groups = np.ceil((counts % 16) / 4).sum()
        # A tail tap costs what a hot-loop tap costs; the rest of the tail body is per group of 4 taps.
        per_tap = len(self.hot.body) / 16
        tail_taps_in_body = sum(i.base in LOAD_OPCODES for i in self.tail.body) / (
            len(self.hot.shared_loads) / 16)
        tail_per_group = (len(self.tail.body) - tail_taps_in_body * per_tap) / self.tail.global_loads
        staged = p.chunks * p.chunk * p.pr * p.tw / THREADS
        staging_per_element = len(self.staging.body) / sum(i.base == "STS" for i in self.staging.body)
        total = (hot_passes * len(self.hot.body) + tail_taps * per_tap + tail_groups * tail_per_group
                 + staged * staging_per_element + p.chunks * self.per_chunk + self.per_thread)
        return float(total) / (OC_WARP * PIXELS)


def branches(loop: Loop) -> int:
    """Branch instructions in a loop body (its back edge included)."""
    return sum(i.base == "BRA" for i in loop.body)


def kernel_cost(function: str, code: list[Instruction]) -> KernelCost:
    """The chunk loop (the one with the barrier), its inner loops, and what lies outside them."""
    every = loops(function, code)
    outer = max((loop for loop in every if any(i.base in BARRIER_OPCODES for i in loop.body)),
                key=lambda loop: len(loop.body))

    def inside(inner: Loop, around: Loop) -> bool:
        return inner is not around and around.start <= inner.start and inner.end <= around.end

    inner = [loop for loop in every if inside(loop, outer)]
    maximal = [loop for loop in inner if not any(inside(loop, other) for other in inner)]
    innermost = [loop for loop in inner if not any(inside(other, loop) for other in inner)]
    tap_loops = [loop for loop in innermost if loop.taps and loop.shared_loads and loop.global_loads]
    # The hot loop's body is straight-line (its one branch is the back edge); the tail's skips taps.
    hot = max((loop for loop in tap_loops if branches(loop) == 1), key=lambda loop: loop.taps)
    tails = [loop for loop in tap_loops if branches(loop) > 1]
    staging = max((loop for loop in inner if any(i.base == "STS" for i in loop.body) and not loop.taps),
                  key=lambda loop: len(loop.body) / sum(i.base == "STS" for i in loop.body))
    return KernelCost(hot, max(tails, key=lambda loop: len(loop.body) / loop.global_loads), staging,
                      len(outer.body) - sum(len(loop.body) for loop in maximal), len(code) - len(outer.body))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_87")
    parser.add_argument("--density", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--map", type=int, default=32, help="output map size of the 128->128 3x3 layer")
    args = parser.parse_args(argv)
    functions = parse_functions(compile_sass(args.arch))
    best = hottest(inner_tap_loops(functions))
    if not best:
        print("no tap loop found in the SASS", file=sys.stderr)
        return 1
    print(f"arch {args.arch}; hot tap loop per kernel (a tap = one non-zero weight of one output value)")
    print("| kernel | loop body (instr.) | taps per pass | instr. per tap | LDS per tap | LDS width (bytes) | "
          "wavefronts per warp LDS | offset loads (LDG) per tap |")
    print("|---|---|---|---|---|---|---|---|")
    for function, loop in sorted(best.items(), key=lambda item: short_name(item[0])):
        element = element_type(function)
        loads = loop.shared_loads
        waves = loop_wavefronts(loop, element) / len(loads) if element and loads else float("nan")
        widths = sorted({load_bytes(i) for i in loads})
        print(f"| {short_name(function)} | {len(loop.body)} | {loop.taps} | {loop.instructions_per_tap:.2f} | "
              f"{len(loads) / loop.taps:.3f} | {'/'.join(map(str, widths))} | {waves:.1f} | "
              f"{loop.global_loads / loop.taps:.3f} |")
    print(f"\ndynamic instructions per output value, 128->128 3x3 layer, {args.map}x{args.map} map "
          f"(plan: {plan(128, args.map)})")
    print("| kernel | " + " | ".join(f"t({d})" for d in args.density)
          + f" | t({args.density[0]})/t({args.density[-1]}) | fixed part (t(0)) |")
    print("|---|" + "---|" * (len(args.density) + 2))
    for function in sorted(best, key=short_name):
        cost = kernel_cost(function, functions[function])
        times = [cost.per_output(d, map_size=args.map) for d in args.density]
        print(f"| {short_name(function)} | " + " | ".join(f"{t:.0f}" for t in times)
              + f" | {times[0] / times[-1]:.3f} | {cost.per_output(0.0, map_size=args.map):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
