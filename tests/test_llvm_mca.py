"""bench/llvm_mca.py: the llvm-mca summary parser and the loop extraction, on real tool output."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from llvm_mca import extract_loop, parse_mca, run_mca  # noqa: E402

# The head of a real `llvm-mca -mtriple=aarch64 -mcpu=cortex-a72 -iterations=100` report (LLVM 14)
# on the dense fp32 loop before its accumulators were kept in registers.
REAL_OUTPUT = """Iterations:        100
Instructions:      3000
Total Cycles:      3220
Total uOps:        6700

Dispatch Width:    3
uOps Per Cycle:    2.08
IPC:               0.93
Block RThroughput: 32.0
"""

# A real GCC 12 -O3 aarch64 function (the int8 ternary tap loop of bench/mca/ternary_int8_neon.cc).
REAL_ASSEMBLY = """mca_tap_loop:
.LFB4372:
\t.cfi_startproc
\tldp\tq3, q2, [x4]
\tcmp\tw3, 0
\tble\t.L1346
\tadd\tx9, x1, 8
\t.p2align 3,,7
.L1347:
\tldrsw\tx3, [x2], 4
\tlsl\tx3, x3, 1
\tldr\tq4, [x0, x3]
\tadd\tv3.8h, v3.8h, v4.8h
\tcmp\tx2, x8
\tbne\t.L1347
.L1346:
\tstp\tq3, q2, [x4]
\tret
\t.cfi_endproc
.LFE4372:
\t.size\tmca_tap_loop, .-mca_tap_loop
"""


def test_parse_mca_reads_cycles_per_iteration():
    assert parse_mca(REAL_OUTPUT) == pytest.approx(32.2)


def test_parse_mca_rejects_other_text():
    with pytest.raises(ValueError, match="not an llvm-mca summary"):
        parse_mca("error: invalid instruction")


def test_extract_loop_takes_the_backward_branch_body():
    body = extract_loop(REAL_ASSEMBLY, "mca_tap_loop")
    assert body == ["ldrsw\tx3, [x2], 4", "lsl\tx3, x3, 1", "ldr\tq4, [x0, x3]", "add\tv3.8h, v3.8h, v4.8h",
                    "cmp\tx2, x8", "bne\t.L1347"]
    with pytest.raises(ValueError, match="not in the assembly"):
        extract_loop(REAL_ASSEMBLY, "other")


@pytest.mark.skipif(shutil.which("llvm-mca") is None, reason="llvm-mca not installed (apt-get install llvm)")
def test_run_mca_on_a_real_loop():
    # One vector load + add per iteration on the body above: a positive, finite cycle count.
    cycles = run_mca(extract_loop(REAL_ASSEMBLY, "mca_tap_loop"), "cortex-a72", iterations=50)
    assert 0.5 <= cycles <= 20
