"""Instructions per vector add in the compiled tap loops of the QTernaryConv tile kernels.

Compiles each integer tile-kernel file with the library's own flags (lbdeploy/kernels/build.py),
disassembles it (objdump) and, for every innermost loop of the widest tile's `run` that adds taps
(a backward branch whose body holds vector adds or subtracts), prints its instruction count, its
vector adds, register-to-register vector copies and scalar instructions, and instructions per
vector add. A tap loop at its add limit has no copies and little more than one instruction per add
(issue 23: 19 instructions per 6 adds before, 6 of them copies).

    .venv/bin/python bench/tap_loop.py                  # x86-64 (AVX-512BW, AVX2)
    .venv/bin/python bench/tap_loop.py --arch aarch64   # NEON (aarch64-linux-gnu-g++ and -objdump)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Per architecture: the tile files, the tile shape whose `run` to read, and the vector add mnemonics.
KERNELS = {
    "x86_64": {"core/qtile_avx512.cc": "QVecAvx512, 3, 2, 1>::run", "core/qtile_avx2.cc": "QVecAvx2, 3, 1, 1>::run"},
    "aarch64": {"core/qtile_neon.cc": "QVecNeon, 2, 2, 1>::run"},
}
ADDS = {"x86_64": re.compile(r"^vp(?:add|sub)w$"), "aarch64": re.compile(r"^(?:add|sub)$")}
VECTOR_ARGS = {"x86_64": re.compile(r"[xyz]mm"), "aarch64": re.compile(r"\bv\d+\.")}
COPIES = {"x86_64": re.compile(r"^vmov"), "aarch64": re.compile(r"^mov$")}


@dataclass
class Loop:
    start: int
    instructions: list  # (mnemonic, operands)

    def count(self, arch: str) -> dict:
        """Vector adds, register copies and scalar instructions of the loop body."""
        vector = VECTOR_ARGS[arch]
        adds = sum(1 for op, args in self.instructions if ADDS[arch].match(op) and vector.search(args))
        copies = sum(1 for op, args in self.instructions if COPIES[arch].match(op) and vector.search(args)
                     and "(" not in args and "[" not in args)
        scalar = sum(1 for op, args in self.instructions if not vector.search(args))
        return {"instructions": len(self.instructions), "adds": adds, "copies": copies, "scalar": scalar}


def compile_object(arch: str, source: str, out: Path) -> Path:
    """`source` (relative to lbdeploy/kernels) compiled with the library's flags for `arch`."""
    from lbdeploy.kernels.build import CORE_DIR, CXXFLAGS, KERNELS_DIR, TARGETS, compiler_for

    flags = TARGETS[arch].tile_sources[source]
    obj = out / (Path(source).stem + f".{arch}.o")
    result = subprocess.run([compiler_for(arch), *CXXFLAGS, *flags, f"-I{CORE_DIR}", "-c", "-o", str(obj),
                             str(KERNELS_DIR / source)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"compiling {source} failed:\n{result.stderr[-2000:]}")
    return obj


def tap_loops(obj: Path, function: str, arch: str) -> list[Loop]:
    """Innermost loops of `function` in `obj` that add vectors (the tap loops)."""
    objdump = "objdump" if arch == "x86_64" else f"{arch}-linux-gnu-objdump"
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", "-C", str(obj)], capture_output=True, text=True,
                          check=True).stdout
    body, inside = [], False
    for line in text.splitlines():
        if re.match(r"^[0-9a-f]+ <", line):
            inside = function in line
            continue
        match = re.match(r"\s*([0-9a-f]+):\s+(\S+)\s*(.*)", line)
        if inside and match:
            body.append((int(match.group(1), 16), match.group(2), match.group(3)))
    index = {address: i for i, (address, _, _) in enumerate(body)}
    loops = []
    for i, (address, op, args) in enumerate(body):
        target = re.match(r"([0-9a-f]+)\b", args)
        if (op.startswith("j") or op.startswith("b")) and target and int(target.group(1), 16) in index:
            start = int(target.group(1), 16)
            if start <= address:
                loop = Loop(start, [(o, a) for _, o, a in body[index[start]: i + 1]])
                if loop.count(arch)["adds"]:
                    loops.append(loop)
    # Innermost: no other tap loop nested inside.
    return [loop for loop in loops if not any(other is not loop and loop.start <= other.start and
                                              len(other.instructions) < len(loop.instructions) and
                                              other.start - loop.start < len(loop.instructions) * 8
                                              for other in loops)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="x86_64", choices=sorted(KERNELS))
    parser.add_argument("--list", action="store_true", help="print every tap loop's instructions")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lbdeploy-taploop-") as tmp:
        for source, function in KERNELS[args.arch].items():
            obj = compile_object(args.arch, source, Path(tmp))
            loops = tap_loops(obj, function, args.arch)
            counts = [loop.count(args.arch) for loop in loops]
            total = {key: sum(c[key] for c in counts) for key in ("instructions", "adds", "copies", "scalar")}
            print(f"{source} ({function.split('>')[0]}): {len(loops)} tap loops; per loop "
                  f"{counts[0]['instructions'] if counts else 0} instructions, {counts[0]['adds'] if counts else 0} "
                  f"vector adds; all loops: {total['instructions'] / max(total['adds'], 1):.2f} instructions per "
                  f"vector add, {total['copies']} register copies, {total['scalar']} scalar instructions")
            if args.list and loops:
                for op, operands in loops[0].instructions:
                    print(f"    {op} {operands}")


if __name__ == "__main__":
    main()
