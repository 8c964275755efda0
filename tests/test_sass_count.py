"""bench/sass_count.py on real nvcc + cuobjdump output: it finds each conv kernel's inner tap loop.

Structure only (which loops, what they hold), never a speed figure. Skips without nvcc/cuobjdump.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import sass_count  # noqa: E402


@pytest.fixture(scope="module")
def sass():
    try:
        for tool in ("nvcc", "cuobjdump", "nvdisasm"):
            sass_count.find_tool(tool)
    except SystemExit as missing:
        pytest.skip(str(missing))
    return sass_count.compile_sass("sm_87")


def test_every_conv_kernel_has_one_hottest_tap_loop(sass):
    functions = sass_count.parse_functions(sass)
    kernels = [name for name in functions if "ternary_conv" in name and "kernel" in name]
    assert len(kernels) == 6  # float at column step 1, 2 and generic, float16 at 2 and generic, float16 pairs
    assert any("build_tap_lists" in name for name in functions)
    best = sass_count.hottest(sass_count.inner_tap_loops(functions))
    assert set(best) == set(kernels)
    for loop in best.values():
        opcodes = [i.base for i in loop.body]
        assert opcodes[-1] == "BRA" and "BAR" not in opcodes and "LDS" in opcodes
        # 4 pixels per thread and an unrolled tap loop: a multiple of 16 output taps per iteration, as
        # FADDs, or as fp16 pair adds in the half2 kernel; the body holds loads besides its adds.
        adds = [i for i in loop.body if i.taps]
        pairs = "half2" in loop.function
        assert loop.taps % 16 == 0 and len(adds) == (loop.taps // 2 if pairs else loop.taps)
        assert {i.base for i in adds} <= ({"HADD2", "HFMA2"} if pairs else {"FADD"})
        assert len(loop.body) > len(adds)
        assert all(loop.start <= i.address <= loop.end for i in loop.body)


def test_parser_reads_predicated_and_modified_opcodes():
    listing = """
        Function : k
        /*0000*/                   LDS R4, [R2+0x4] ;   /* 0x0 */
        /*0010*/                   FADD.FTZ R8, R8, R4 ;   /* 0x0 */
        /*0020*/                   HFMA2.MMA R9, R9, 1, 1, R4 ;   /* 0x0 */
        /*0030*/                   HFMA2 R10, R9, R4, R10 ;   /* 0x0 */
        /*0040*/               @P0 BRA 0x0 ;   /* 0x0 */
    """
    (loop,) = sass_count.loops("k", sass_count.parse_functions(listing)["k"])
    assert [i.base for i in loop.body] == ["LDS", "FADD", "HFMA2", "HFMA2", "BRA"]
    assert loop.taps == 3 and loop.instructions_per_tap == 5 / 3  # a real FMA is not an add
