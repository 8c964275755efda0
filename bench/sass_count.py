"""Static cost of the CUDA TernaryConv kernel: SASS instructions per non-zero tap, and density scaling.

    python bench/sass_count.py [--arch sm_87] [--density 0.1 0.5]

compiles lbdeploy/kernels/cuda/ternary_conv.cu with nvcc for `--arch`, dumps the SASS with
cuobjdump, and finds each conv kernel's inner loops: loops (a backward branch and the instructions
from its target up to it) that hold adds and shared-memory loads, no barrier and no inner loop. For
the hottest loop of each kernel it prints the body size, the adds in it (one add = one non-zero tap
of one output value), and instructions per tap. The density model then gives the loop's dynamic
instructions per output value for a 128->128 3x3 layer: body / adds x (non-zero taps = 1152 x density).
No GPU is needed. Needs nvcc and cuobjdump (+ nvdisasm; pip install nvidia-cuda-cuobjdump
nvidia-cuda-nvdisasm, or a CUDA toolkit).

To extend: add an opcode to ADD_OPCODES (e.g. an int8 path's IDP4A) and the report counts it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KERNEL_CU = REPO / "lbdeploy" / "kernels" / "cuda" / "ternary_conv.cu"
# opcode -> output taps one such add sums (HADD2: two fp16 lanes). ptxas also issues fp16 pair adds as
# HFMA2.MMA Rd, Ra, 1, 1, Rc (Ra * 1 + Rc) to balance its pipes; those count when multiplying by 1.
ADD_OPCODES = {"FADD": 1, "HADD2": 2, "HFMA2": 2}
LOAD_OPCODES = ("LDS",)
BARRIER_OPCODES = ("BAR",)
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


def short_name(mangled: str) -> str:
    """A readable kernel name (ternary_conv_kernel<float, step 1>) from the mangled one."""
    match = re.search(r"(ternary_conv_half2_kernel|ternary_conv_kernel)(?:I(6__half|f)Li(\d)E)?", mangled)
    if not match:
        return mangled
    if match.group(2) is None:
        return f"{match.group(1)} (float16 pairs, step 1)"
    return f"{match.group(1)}<{'half' if match.group(2) != 'f' else 'float'}, step {match.group(3)}>"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_87")
    parser.add_argument("--density", type=float, nargs="+", default=[0.1, 0.5])
    args = parser.parse_args(argv)
    best = hottest(inner_tap_loops(parse_functions(compile_sass(args.arch))))
    if not best:
        print("no tap loop found in the SASS", file=sys.stderr)
        return 1
    taps_dense = 128 * 9
    print(f"arch {args.arch}; 128->128 3x3 layer: {taps_dense} taps per output value when dense")
    header = "| kernel | loop body (instr.) | output taps per iteration | instr. per tap | " + " | ".join(
        f"loop instr. per output @ density {d}" for d in args.density) + " |"
    print(header)
    print("|" + "---|" * (4 + len(args.density)))
    for function, loop in sorted(best.items(), key=lambda item: short_name(item[0])):
        per_output = [loop.instructions_per_tap * taps_dense * d for d in args.density]
        print(f"| {short_name(function)} | {len(loop.body)} | {loop.taps} | {loop.instructions_per_tap:.2f} | "
              + " | ".join(f"{v:.0f}" for v in per_output) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
