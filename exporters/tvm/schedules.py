"""Schedules for every TIR function of an LBRN model, without tuning.

TVM's default Relax CPU pipeline leaves ops as naive loop nests (and MetaSchedule cannot be used
with this TVM wheel), so this module schedules each fused PrimFunc with two rules:

* reduction functions (Conv 1x1 / 7x7 stem / any real conv, MaxPool, GlobalAveragePool,
  Gemm/MatMul, each with its fused bias/BN/ReLU/Add epilogue): the output is tiled into a
  register block of `OB` output channels x `XV` columns; the loop nest
  `[batch, row] (parallel) -> column tile -> channel block -> reduction -> OB (unrolled) -> XV
  (vectorized)` packs the tile's input columns once into a contiguous buffer shared by all
  channel blocks (split into `stride` phases per row for a strided conv, so vector loads stay
  contiguous), and keeps the accumulators in a "local" cache written back once by a block
  that also computes the inlined epilogue. Zero padding stays a separate loop nest.
* injective functions (BatchNorm as Mul/Add, Relu, Sigmoid, Add, pad, Resize, Concat,
  Reshape/Flatten, Gather): producers are inlined, the innermost axis vectorized (kept on its own
  when at least one register long), the outer loops fused and parallel.

TernaryConv kernels carry `tirx.is_scheduled` and are left alone. GPU targets use TVM's dlight
GPU fallback rule (thread binding). To add a rule, write `_schedule_<kind>` and call it from
`schedule_cpu_func`.
"""

from __future__ import annotations

from lbdeploy.errors import ExportError

MAX_CHANNEL_BLOCK = 8  # output channels per register tile
REGISTER_BUDGET = 16  # SIMD accumulator registers a tile may use
TILE_WIDTH_REGISTERS = 4  # SIMD registers along the vectorized axis of a tile, at most


def _largest_divisor(extent: int, limit: int, choices=None) -> int:
    """The largest divisor of `extent` not above `limit` (from `choices` when given)."""
    candidates = choices if choices is not None else range(1, limit + 1)
    fits = [d for d in candidates if d <= limit and extent % d == 0]
    return max(fits) if fits else 1


def _extent(dom) -> int | None:
    return int(dom) if hasattr(dom, "value") or isinstance(dom, int) else None


def _schedule_spatial(sch, block, vector_floats: int) -> None:
    """Parallelize an injective block's outer loops and vectorize its innermost axis.

    A row axis of at least one SIMD register stays on its own (contiguous vector loads even
    through a Concat select or a Resize); shorter rows are fused with the outer loops first.
    """
    loops = sch.get_loops(block)
    if not loops:
        return
    last = _extent(sch.get(loops[-1]).extent)
    if len(loops) > 1 and _has_condition(sch, block):
        # Padding: a vectorized bounds check per element is slower than the plain row loop,
        # which LLVM vectorizes itself (7x faster on a 128x64x64 pad).
        sch.parallel(sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0])
        return
    if len(loops) > 1 and last is not None and last >= vector_floats:
        outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
        inner = loops[-1]
    else:
        outer, inner = None, sch.fuse(*loops) if len(loops) > 1 else loops[0]
    total = _extent(sch.get(inner).extent)
    lanes = _largest_divisor(total, vector_floats, [vector_floats, vector_floats // 2, 2]) if total else 1
    if lanes > 1:
        rest, vector = sch.split(inner, [None, lanes])
        sch.vectorize(vector)
        outer = rest if outer is None else sch.fuse(outer, rest)
    else:
        outer = inner if outer is None else sch.fuse(outer, inner)
    sch.parallel(outer)


def _tile_factors(extents: list[int], vector_floats: int) -> tuple[int, int, int, int]:
    """(vector axis, its tile XV, channel axis, its tile OB) of a reduction block's spatial extents."""
    vec_axis = max((i for i, e in enumerate(extents) if e > 1), default=len(extents) - 1)
    width = extents[vec_axis]
    widest = TILE_WIDTH_REGISTERS * vector_floats
    xv = _largest_divisor(width, widest) if width > widest else width
    registers = max(1, -(-xv // vector_floats))
    chan_axis = 1 if len(extents) == 4 else 0
    ob = 1
    if chan_axis != vec_axis and chan_axis < len(extents):
        limit = min(MAX_CHANNEL_BLOCK, max(1, REGISTER_BUDGET // registers))
        ob = _largest_divisor(extents[chan_axis], limit)
    return vec_axis, xv, chan_axis, ob


def _schedule_reduction(sch, info, epilogues, vector_floats: int) -> None:
    """Register-tiled schedule of one reduction block (see the module docstring).

    `epilogues` are the elementwise consumer blocks to compute in the tile's write-back.
    """
    block = info.block_rv
    spatial = [it for it in info.iters if it.kind == "S"]
    reduction = [it for it in info.iters if it.kind == "R"]
    extents = [_extent(it.dom) for it in spatial]
    if any(e is None for e in extents) or not spatial:
        raise ExportError(f"TVM schedule: block {info.name} has dynamic or no spatial loops")
    vec_axis, xv, chan_axis, ob = _tile_factors(extents, vector_floats)
    outer, inner, channel_outer = [], [], []
    for axis, it in enumerate(spatial):
        if axis == vec_axis:
            vec_outer, vec_inner = sch.split(it.loop_rv, [None, xv])
        elif axis == chan_axis and ob > 1:
            co, ci = sch.split(it.loop_rv, [None, ob])
            channel_outer.append(co)
            inner.append(ci)
        else:
            outer.append(it.loop_rv)
    # The channel blocks run innermost of the tile loops: every block reuses the same input
    # columns while they are in L1, and only the small weight block changes.
    tile_loop = channel_outer[-1] if channel_outer else vec_outer
    sch.reorder(*outer, vec_outer, *channel_outer, *[it.loop_rv for it in reduction], *inner, vec_inner)
    if outer:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    else:
        sch.parallel(vec_outer)
    above = (1 if outer else 0) + 1  # loops down to the column tile
    packed_input = _shared_input(sch, block, spatial[vec_axis].var, spatial[chan_axis].var if inner else None)
    if packed_input is not None:
        # Copy the tile's input columns once into a contiguous buffer that every channel block
        # reads (as GEMM libraries pack their panels): NCHW channel rows lie far apart in memory.
        stride = _column_stride(sch, block, packed_input, spatial[vec_axis].var)
        pack = sch.cache_read(block, packed_input, "global")
        sch.compute_at(pack, vec_outer, preserve_unit_loops=True)
        if stride > 1:
            # A strided conv (the 7x7 stride-2 stem) would gather every vector lane by lane; the
            # pack splits each row into `stride` phases, so each tap reads one contiguous run.
            sch.transform_layout(pack, ("write", 0),
                                 lambda *index: [*index[:-1], index[-1] % stride, index[-1] // stride])
        _vectorize_tail(sch, pack, xv, below=above)
    cache = sch.cache_write(block, 0, "local")
    for epilogue in epilogues:
        sch.reverse_compute_inline(epilogue)
    sch.reverse_compute_at(cache, tile_loop, preserve_unit_loops=True)
    for loop in inner:
        sch.unroll(loop)
    if xv > 1:
        sch.vectorize(vec_inner)
    depth = above + len(channel_outer)  # loops above the tile's blocks
    _vectorize_tail(sch, cache, xv, below=depth)
    if reduction:
        init = sch.decompose_reduction(block, reduction[0].loop_rv)
        _vectorize_tail(sch, init, xv, below=depth)


def _shared_input(sch, block, vec_var, chan_var):
    """Index of the block read that the channel blocks share (indexed by the vector axis, not
    by the output channel), or None when there is no channel split or no such read."""
    if chan_var is None:
        return None
    from tvm.tirx.analysis import undefined_vars

    for index, region in enumerate(sch.get(block).reads):
        used = {var for r in region.region for var in undefined_vars(r.min)}
        if any(v.same_as(vec_var) for v in used) and not any(v.same_as(chan_var) for v in used):
            return index
    return None


def _column_stride(sch, block, read_index: int, vec_var) -> int:
    """How far apart (in elements of its last axis) the block's read `read_index` is for
    consecutive values of the vectorized axis; 1 when not a constant stride."""
    from tvm.sym.pattern import detect_linear_equation

    last = sch.get(block).reads[read_index].region[-1].min
    coefficients = detect_linear_equation(last, [vec_var])
    if len(coefficients) != 2 or not hasattr(coefficients[0], "value"):
        return 1
    return max(1, int(coefficients[0].value))


def _vectorize_tail(sch, block, xv: int, below: int = 0) -> None:
    """Vectorize the innermost loop of a tile-sized block; unroll its short loops under the
    first `below` (tile) loops."""
    loops = sch.get_loops(block)
    if len(loops) <= below:
        return
    from tvm.tirx import ForKind

    inner = loops[-1]
    for loop in loops[below:-1]:
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
    # Zero padding stays a separate (parallel, vectorized) loop nest: inlined, it would put a
    # bounds check on every vectorized load of the reduction.
    pads = [info for info in infos if info is not main and _has_condition(sch, info.block_rv)]
    # A reduction over unit loops only (a 1x1 depthwise conv: BatchNorm as a grouped Conv in int8
    # QDQ graphs) is normalized without reduction iterators; an epilogue inlined into it would
    # run in its init and in its update (the bias added twice), so its consumers stay separate.
    if not any(it.kind == "R" for it in main.iters):
        pads += [info for info in infos if info is not main and _consumes(sch, info.block_rv, main.block_rv)]
    rest = try_inline(sch, [info for info in infos if info is not main and info not in pads])
    epilogues = []
    for info in rest:
        (epilogues if _consumes(sch, info.block_rv, main.block_rv) else pads).append(info)
    _schedule_reduction(sch, main, [info.block_rv for info in epilogues], vector_floats)
    for info in pads:
        _schedule_spatial(sch, info.block_rv, vector_floats)
    return sch


def _has_condition(sch, block) -> bool:
    import tvm

    return bool(tvm.get_global_func("s_tir.schedule.HasIfThenElse")(sch.get(block)))


def _consumes(sch, block, producer) -> bool:
    """True when `block` reads what `producer` writes."""
    return any(sch.get(c).same_as(sch.get(block)) for c in sch.get_consumers(producer))


def cpu_schedule_pass(vector_floats: int):
    """A module pass scheduling every unscheduled PrimFunc with `schedule_cpu_func`."""
    from tvm.s_tir import dlight

    class _CpuRules(dlight.ScheduleRule):
        def apply(self, func, target, tunable):
            return schedule_cpu_func(func, vector_floats)

    return dlight.ApplyDefaultSchedule(_CpuRules())


def gpu_schedule_pass():
    """TVM's dlight GPU fallback rule: bind every non-TernaryConv PrimFunc to blocks and threads.

    Only the fallback rule (one thread per output, reductions serial in the thread): the
    shared-memory rules emit barriers that TVM 0.27's nvptx code generator cannot lower.
    """
    from tvm.s_tir import dlight

    return dlight.ApplyDefaultSchedule(dlight.gpu.Fallback())
