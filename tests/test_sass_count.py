"""bench/sass_count.py on real nvcc + cuobjdump output: it finds each conv kernel's loops and loads.

Structure only (which loops, what they hold, which loads), never a speed figure. Skips without
nvcc/cuobjdump.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import sass_count  # noqa: E402


@pytest.fixture(scope="module")
def functions():
    try:
        for tool in ("nvcc", "cuobjdump", "nvdisasm"):
            sass_count.find_tool(tool)
    except SystemExit as missing:
        pytest.skip(str(missing))
    return sass_count.parse_functions(sass_count.compile_sass("sm_87"))


def test_every_conv_kernel_has_one_hottest_tap_loop(functions):
    kernels = [name for name in functions if sass_count.element_type(name)]
    assert sorted(sass_count.element_type(name) for name in kernels) == ["float", "half"]
    assert any("build_tap_lists" in name for name in functions)
    best = sass_count.hottest(sass_count.inner_tap_loops(functions))
    assert set(best) == set(kernels)
    for function, loop in best.items():
        opcodes = [i.base for i in loop.body]
        assert opcodes[-1] == "BRA" and "BAR" not in opcodes
        adds = [i for i in loop.body if i.taps]
        pairs = sass_count.element_type(function) == "half"
        # PIXELS positions per lane and 16 list entries per pass: as FADDs or fp16 pair adds.
        assert loop.taps % (16 * sass_count.PIXELS) == 0 and len(adds) == (loop.taps // 2 if pairs else loop.taps)
        assert {i.base for i in adds} <= ({"HADD2", "HFMA2"} if pairs else {"FADD"})


def test_hot_loops_read_the_tile_with_conflict_free_16_byte_loads(functions):
    """Each input load serves 4 (float32) or 8 (float16) positions without bank conflicts; the tap
    offsets come through the read-only global path, not shared memory."""
    best = sass_count.hottest(sass_count.inner_tap_loops(functions))
    for function, loop in best.items():
        element = sass_count.element_type(function)
        loads = loop.shared_loads
        assert {sass_count.load_bytes(i) for i in loads} == {16}
        assert sass_count.loop_wavefronts(loop, element) == 4 * len(loads)  # 512 bytes per warp load
        positions_per_load = 4 if element == "float" else 8
        assert len(loads) * positions_per_load == loop.taps
        assert loop.global_loads * 4 * sass_count.PIXELS == loop.taps  # one 16-byte load of 4 offsets per 4 entries


def test_dynamic_estimate_follows_the_density(functions):
    for function, code in functions.items():
        if sass_count.element_type(function):
            cost = sass_count.kernel_cost(function, code)
            assert cost.hot.global_loads == 4 and cost.tail.global_loads == 1
            assert sum(i.base == "STS" for i in cost.staging.body) >= 1
            times = [cost.per_output(d) for d in (0.0, 0.1, 0.5, 1.0)]
            assert times == sorted(times) and times[0] > 0


def test_wavefronts_count_bank_conflicts():
    # 4-byte loads: consecutive lanes take one wavefront; a stride of 2 words puts 2 lanes in each bank.
    assert sass_count.wavefronts([4 * lane for lane in range(32)], 4) == 1
    assert sass_count.wavefronts([8 * lane for lane in range(32)], 4) == 2
    assert sass_count.wavefronts([0] * 32, 4) == 1  # a broadcast
    # 16-byte loads: 4 phases of 8 lanes; 32-byte spacing makes each phase span 256 bytes (2-way).
    assert sass_count.wavefronts([16 * lane for lane in range(32)], 16) == 4
    assert sass_count.wavefronts([32 * lane for lane in range(32)], 16) == 8


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
    assert sass_count.load_bytes(loop.body[0]) == 4
