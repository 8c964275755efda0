"""Schedules for every TIR function of an LBRN model, without tuning.

TVM's default Relax CPU pipeline leaves ops as naive loop nests (and MetaSchedule cannot be used
with this TVM wheel), so this module schedules each fused PrimFunc with two rules:

* reduction functions (Conv 1x1 / 7x7 stem / any real conv, MaxPool, GlobalAveragePool,
  Gemm/MatMul, each with its fused pad prologue and bias/BN/ReLU/Add epilogue): the output is
  tiled into a register block of `OB` output channels x `XV` columns; the tile loop nest
  `[batch, channel-block, row] -> columns -> reduction -> OB (unrolled) -> XV (vectorized)` is
  parallel over its fused outer loops; accumulators live in a "local" cache written back once by
  a block that also computes the inlined epilogue.
* injective functions (BatchNorm as Mul/Add, Relu, Sigmoid, Add, pad, Resize nearest, Concat,
  Reshape/Flatten): producers are inlined, the loops fused, split into a vectorized inner part and
  a parallel outer part.

TernaryConv kernels carry `tirx.is_scheduled` and are left alone. GPU targets use TVM's dlight
GPU rules (thread binding). To add a rule, write `_schedule_<kind>` and call it from
`schedule_cpu_func`.
"""

from __future__ import annotations

from lbdeploy.errors import ExportError

MAX_CHANNEL_BLOCK = 8  # output channels per register tile
REGISTER_BUDGET = 16  # SIMD accumulator registers a tile may use


def _largest_divisor(extent: int, limit: int, choices=None) -> int:
    """The largest divisor of `extent` not above `limit` (from `choices` when given)."""
    candidates = choices if choices is not None else range(1, limit + 1)
    fits = [d for d in candidates if d <= limit and extent % d == 0]
    return max(fits) if fits else 1


def _extent(dom) -> int | None:
    return int(dom) if hasattr(dom, "value") or isinstance(dom, int) else None


def _schedule_spatial(sch, block, vector_floats: int) -> None:
    """Fuse all loops of an injective block, vectorize the inner part, parallelize the rest."""
    loops = sch.get_loops(block)
    if not loops:
        return
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    total = _extent(sch.get(fused).extent)
    if total is None:
        sch.parallel(fused)
        return
    lanes = _largest_divisor(total, vector_floats, [vector_floats, vector_floats // 2, 2, 1])
    if lanes > 1:
        outer, inner = sch.split(fused, [None, lanes])
        sch.parallel(outer)
        sch.vectorize(inner)
    else:
        sch.parallel(fused)


def _tile_factors(extents: list[int], vector_floats: int) -> tuple[int, int, int, int]:
    """(vector axis, its tile XV, channel axis, its tile OB) of a reduction block's spatial extents."""
    vec_axis = max((i for i, e in enumerate(extents) if e > 1), default=len(extents) - 1)
    width = extents[vec_axis]
    xv = _largest_divisor(width, 2 * vector_floats) if width > 2 * vector_floats else width
    registers = max(1, -(-xv // vector_floats))
    chan_axis = 1 if len(extents) == 4 else 0
    ob = 1
    if chan_axis != vec_axis and chan_axis < len(extents):
        limit = min(MAX_CHANNEL_BLOCK, max(1, REGISTER_BUDGET // registers))
        ob = _largest_divisor(extents[chan_axis], limit)
    return vec_axis, xv, chan_axis, ob


def _schedule_reduction(sch, info, epilogues, vector_floats: int) -> None:
    """Register-tiled schedule of one reduction block (see the module docstring)."""
    block = info.block_rv
    spatial = [it for it in info.iters if it.kind == "S"]
    reduction = [it for it in info.iters if it.kind == "R"]
    extents = [_extent(it.dom) for it in spatial]
    if any(e is None for e in extents) or not spatial:
        raise ExportError(f"TVM schedule: block {info.name} has dynamic or no spatial loops")
    vec_axis, xv, chan_axis, ob = _tile_factors(extents, vector_floats)
    outer, inner = [], []
    for axis, it in enumerate(spatial):
        if axis == vec_axis:
            xo, xi = sch.split(it.loop_rv, [None, xv])
            vec_outer, vec_inner = xo, xi
        elif axis == chan_axis and ob > 1:
            co, ci = sch.split(it.loop_rv, [None, ob])
            outer.append(co)
            inner.append(ci)
        else:
            outer.append(it.loop_rv)
    sch.reorder(*outer, vec_outer, *[it.loop_rv for it in reduction], *inner, vec_inner)
    cache = sch.cache_write(block, 0, "local")
    for epilogue in epilogues:
        sch.reverse_compute_inline(epilogue.block_rv)
    sch.reverse_compute_at(cache, vec_outer, preserve_unit_loops=True)
    if outer:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    for loop in inner:
        sch.unroll(loop)
    if xv > 1:
        sch.vectorize(vec_inner)
    _vectorize_tail(sch, cache, xv)
    if reduction:
        init = sch.decompose_reduction(block, reduction[0].loop_rv)
        _vectorize_tail(sch, init, xv)


def _vectorize_tail(sch, block, xv: int) -> None:
    """Vectorize the innermost loop of a tile-sized block, unroll the loops above it."""
    loops = sch.get_loops(block)
    if not loops:
        return
    from tvm.tirx import ForKind

    inner = loops[-1]
    for loop in loops[:-1]:
        extent = _extent(sch.get(loop).extent)
        if sch.get(loop).kind == ForKind.SERIAL and extent is not None and 1 < extent <= MAX_CHANNEL_BLOCK:
            sch.unroll(loop)
    if xv > 1 and sch.get(inner).kind == ForKind.SERIAL and _extent(sch.get(inner).extent) == xv:
        sch.vectorize(inner)


def schedule_cpu_func(func, vector_floats: int):
    """Schedule one PrimFunc for CPU; returns the scheduled `tvm.s_tir.Schedule` or None.

    None means the function is not in a form the rules understand (it then stays unscheduled).
    """
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func
    from tvm.s_tir.dlight.base.common_schedules import try_inline

    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    if infos is None:
        return None
    reductions = [info for info in infos if info.is_reduction()]
    if len(reductions) > 1:
        return None
    if not reductions:
        for info in try_inline(sch, infos):
            _schedule_spatial(sch, info.block_rv, vector_floats)
        return sch
    main = reductions[0]
    producers_and_epilogues = try_inline(sch, [info for info in infos if info is not main])
    _schedule_reduction(sch, main, producers_and_epilogues, vector_floats)
    return sch


def cpu_schedule_pass(vector_floats: int):
    """A module pass scheduling every unscheduled PrimFunc with `schedule_cpu_func`."""
    from tvm.s_tir import dlight

    class _CpuRules(dlight.ScheduleRule):
        def apply(self, func, target, tunable):
            return schedule_cpu_func(func, vector_floats)

    return dlight.ApplyDefaultSchedule(_CpuRules())


def gpu_schedule_pass():
    """TVM's dlight GPU rules: bind every non-TernaryConv PrimFunc to blocks and threads."""
    from tvm.s_tir import dlight

    gpu = dlight.gpu
    return dlight.ApplyDefaultSchedule(
        gpu.Matmul(), gpu.GEMV(), gpu.Reduction(), gpu.GeneralReduction(), gpu.Fallback()
    )
