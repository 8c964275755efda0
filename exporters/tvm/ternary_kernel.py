"""`ai.lbdeploy::TernaryConv` as TVM TIR that only adds and subtracts.

One algorithm with lbdeploy's ONNX Runtime kernel (lbdeploy/kernels/core/tile_kernel.h): sums are
shared across output channels. For a block of BLOCK = 4 output channels every filter tap
(c, i, j) has a joint ternary pattern, e.g. (+1, 0, -1, +1). Taps whose patterns are equal up to
sign are summed once (taps of the opposite sign subtracted) into S, and S is then added to or
subtracted from each channel of the block where the pattern digit is non-zero. Each input vector is
loaded once for the 4 channels; at density 0.5 this needs about half the loads and additions of a
per-channel pass. The 40 patterns (up to sign) are visited in a fixed order, unrolled at compile
time, so the combine step is straight-line adds/subs with no multiply and no select.

The weights are constants known at compile time and live in the module in a compact form:

    idx[int16]      tap indices k = (c*kH + i)*kW + j, grouped by block, then by pattern code
                    (81 codes, 40 used), + taps then - taps (2 bytes per tap with a non-zero pattern)
    ptr[int32]      list boundaries: block b, code q: + taps idx[ptr[2(81b+q)] : ptr[2(81b+q)+1]],
                    - taps up to ptr[2(81b+q)+2]
    offsets[int32]  one per filter tap (not per non-zero): its offset c*Hp*Wp + i*dH*Wp + j*dW in
                    the zero-padded input

CPU kernel: rows are spread over cores (`T.parallel`), a register tile of RT rows x XT columns over
SIMD lanes (`T.vectorized`); each tile ends with the fused epilogue act(scale[o] * acc + bias[o]),
the only multiply. The GPU kernel gives one (output pixel, channel block) to one thread.

To change the tiling, edit `cpu_tile`; to add an activation, extend `_epilogue`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from lbdeploy.errors import ExportError
from lbdeploy.ops.ternary_conv import TernaryConvAttrs

BLOCK = 4  # output channels sharing pattern sums (as lbdeploy/kernels/core/patterns.h)
CODES = 3 ** BLOCK  # pattern codes sum_j (digit_j + 1) * 3^j
INDEX_LIMIT = np.iinfo(np.int16).max  # filter tap indices must fit the int16 lists
GPU_THREADS = 256
KERNEL_ATTR = "lbdeploy.ternary_conv"  # marks the PrimFunc (already scheduled)


@dataclass(frozen=True)
class TernaryGeometry:
    """Static shapes of one TernaryConv call (padded input, output, filter)."""

    n: int
    c: int
    hp: int
    wp: int
    cout: int
    oh: int
    ow: int
    group: int
    kh: int
    kw: int
    stride: tuple[int, int]
    dilation: tuple[int, int]

    @property
    def cin_g(self) -> int:
        """Input channels per group."""
        return self.c // self.group

    @property
    def cout_g(self) -> int:
        """Output channels per group."""
        return self.cout // self.group

    @property
    def blocks_per_group(self) -> int:
        """Channel blocks per group (the last one padded with all-zero channels)."""
        return -(-self.cout_g // BLOCK)

    @property
    def k(self) -> int:
        """Weights per filter, K = Cin/group * kH * kW."""
        return self.cin_g * self.kh * self.kw

    @classmethod
    def of(cls, x_shape, cout: int, attrs: TernaryConvAttrs) -> "TernaryGeometry":
        """Geometry of a TernaryConv on an input of `x_shape` (before padding)."""
        n, c, h, w = (int(d) for d in x_shape)
        pt, pl, pb, pr = attrs.pads
        oh, ow = attrs.output_hw(h, w)
        if oh < 1 or ow < 1:
            raise ExportError(f"TernaryConv on a {h}x{w} input gives an empty {oh}x{ow} output")
        return cls(n, c, h + pt + pb, w + pl + pr, cout, oh, ow, attrs.group, *attrs.kernel_shape,
                   tuple(attrs.strides), tuple(attrs.dilations))


@dataclass(frozen=True)
class TernaryTables:
    """The compact pattern-sorted weight form (see the module docstring)."""

    idx: np.ndarray  # int16 [taps]
    ptr: np.ndarray  # int32 [2 * CODES * blocks + 1]
    offsets: np.ndarray  # int32 [K]

    @property
    def nbytes(self) -> int:
        """Bytes the tables take in the module."""
        return self.idx.nbytes + self.ptr.nbytes + self.offsets.nbytes


def pattern_digits(code: int) -> tuple[int, ...]:
    """The BLOCK digits in {-1, 0, +1} of a pattern code."""
    return tuple((code // 3 ** j) % 3 - 1 for j in range(BLOCK))


def encode_weights(weights: np.ndarray, geom: TernaryGeometry) -> TernaryTables:
    """Turn int8 ternary filters [Cout, Cin/g, kH, kW] into the pattern tables.

    Raises:
        ExportError: a filter has more weights than the int16 indices can address.
    """
    if geom.k > INDEX_LIMIT:
        raise ExportError(
            f"TernaryConv filters of {geom.k} weights exceed the TVM kernel's int16 index range "
            f"({INDEX_LIMIT}); split the layer or use the ORT backend"
        )
    flat = np.asarray(weights, np.int8).reshape(geom.group, geom.cout_g, geom.k)
    blocks = np.zeros((geom.group, geom.blocks_per_group * BLOCK, geom.k), np.int64)
    blocks[:, : geom.cout_g] = flat
    blocks = blocks.reshape(-1, BLOCK, geom.k)  # [group * blocks_per_group, BLOCK, K]
    codes = ((blocks + 1) * (3 ** np.arange(BLOCK))[None, :, None]).sum(axis=1)  # [blocks, K]
    lists, ptr = [], [0]
    for block_codes in codes:
        for code in range(CODES):
            # code and CODES-1-code are the same pattern with opposite signs; the canonical
            # one (first non-zero digit +1) collects both, the other's lists stay empty.
            canonical = _is_canonical(code)
            plus = np.flatnonzero(block_codes == code) if canonical else np.zeros(0, np.int64)
            minus = np.flatnonzero(block_codes == CODES - 1 - code) if canonical else np.zeros(0, np.int64)
            lists += [plus, minus]
            ptr += [ptr[-1] + plus.size, ptr[-1] + plus.size + minus.size]
    idx = np.concatenate(lists).astype(np.int16)
    k = np.arange(geom.k)
    c, tap = np.divmod(k, geom.kh * geom.kw)
    i, j = np.divmod(tap, geom.kw)
    offsets = c * geom.hp * geom.wp + i * geom.dilation[0] * geom.wp + j * geom.dilation[1]
    # An empty buffer cannot be passed to the kernel; one unused entry keeps shapes non-empty.
    if idx.size == 0:
        idx = np.zeros(1, np.int16)
    return TernaryTables(idx, np.asarray(ptr, np.int32), offsets.astype(np.int32))


def _is_canonical(code: int) -> bool:
    digits = [d for d in pattern_digits(code) if d]
    return bool(digits) and digits[0] == 1


def cpu_tile(geom: TernaryGeometry, vector_floats: int, vector_registers: int) -> tuple[int, int]:
    """Register tile (rows RT, columns XT) of the CPU kernel.

    BLOCK channel accumulators plus the pattern sum, each RT x XT floats, must fit in 3/4 of the
    SIMD registers; XT is the widest divisor of OW within that, RT stacks rows while they fit.
    """
    budget = (3 * vector_registers // 4) // (BLOCK + 1)  # registers per RT x XT tile
    widest = max(1, budget) * vector_floats
    xt = max(d for d in range(1, min(widest, geom.ow) + 1) if geom.ow % d == 0)
    per_row = -(-xt // vector_floats)
    rt = max(r for r in (4, 2, 1) if geom.oh % r == 0 and (r * per_row <= budget or r == 1))
    return rt, xt


def _epilogue(T, value, scale, bias, activation: str):
    y = value * scale + bias
    if activation == "relu":
        return T.max(y, T.float32(0))
    if activation == "sigmoid":
        return T.float32(1) / (T.float32(1) + T.exp(-y))
    return y


def _digit(code, j):
    """Digit j of a pattern code (a TIR expression; constant once the loops are unrolled)."""
    from tvm import tirx

    if isinstance(j, int):
        return (code // 3 ** j) % 3 - 1
    power = tirx.const(3 ** (BLOCK - 1), "int32")
    for i in reversed(range(BLOCK - 1)):
        power = tirx.Select(j == i, tirx.const(3 ** i, "int32"), power)
    return (code // power) % 3 - 1


def _canonical(code):
    """TIR condition: the pattern's first non-zero digit is +1 (the code owns its tap lists)."""
    from tvm import tirx

    conditions = []
    for j in range(BLOCK):
        lower_zero = [_digit(code, i) == 0 for i in range(j)]
        conditions.append(tirx.all(*lower_zero, _digit(code, j) == 1))
    return tirx.any(*conditions)


@functools.lru_cache(maxsize=None)  # layers of the same geometry share one PrimFunc
def cpu_kernel(geom: TernaryGeometry, activation: str, vector_floats: int, vector_registers: int):
    """The CPU PrimFunc (xp padded [N,C,Hp,Wp], idx, ptr, offsets, scale, bias) -> y [N,Cout,OH,OW]."""
    from tvm.script import tirx as T

    N, C, Hp, Wp, Cout, OH, OW = geom.n, geom.c, geom.hp, geom.wp, geom.cout, geom.oh, geom.ow
    SH, SW = geom.stride
    K, CIN_G, COUT_G, BPG = geom.k, geom.cin_g, geom.cout_g, geom.blocks_per_group
    BLOCKS = BPG * geom.group
    RT, XT = cpu_tile(geom, vector_floats, vector_registers)
    BANDS, TILES = OH // RT, OW // XT
    act = activation

    @T.prim_func
    def ternary_conv(xp: T.Buffer((N, C, Hp, Wp), "float32"), idx_handle: T.handle,
                     ptr: T.Buffer((2 * CODES * BLOCKS + 1,), "int32"), offsets: T.Buffer((K,), "int32"),
                     scale: T.Buffer((Cout,), "float32"), bias: T.Buffer((Cout,), "float32"),
                     y: T.Buffer((N, Cout, OH, OW), "float32")):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, KERNEL_ATTR: True})
        # The tap count varies per layer; a symbolic length lets same-shape layers share the code.
        taps = T.int32()
        idx = T.match_buffer(idx_handle, (taps,), "int16")
        xf = T.decl_buffer((N * C * Hp * Wp,), "float32", data=xp.data)
        for band in T.parallel(N * BANDS):
            for b in range(BLOCKS):
                for tile in range(TILES):
                    out = T.alloc_buffer((BLOCK, RT, XT), "float32", scope="local")
                    acc = T.alloc_buffer((RT, XT), "float32", scope="local")
                    base = ((band // BANDS) * C + (b // BPG) * CIN_G) * (Hp * Wp) \
                        + (band % BANDS) * RT * SH * Wp + tile * XT * SW
                    for j in T.unroll(BLOCK):
                        for r in T.unroll(RT):
                            for v in T.vectorized(XT):
                                out[j, r, v] = T.float32(0)
                    for code in T.unroll(CODES):
                        if _canonical(code):
                            for r in T.unroll(RT):
                                for v in T.vectorized(XT):
                                    acc[r, v] = T.float32(0)
                            for p in range(ptr[2 * (b * CODES + code)], ptr[2 * (b * CODES + code) + 1]):
                                at = base + offsets[T.Cast("int32", idx[p])]
                                for r in T.unroll(RT):
                                    for v in T.vectorized(XT):
                                        acc[r, v] = acc[r, v] + xf[at + r * SH * Wp + v * SW]
                            for p in range(ptr[2 * (b * CODES + code) + 1], ptr[2 * (b * CODES + code) + 2]):
                                at = base + offsets[T.Cast("int32", idx[p])]
                                for r in T.unroll(RT):
                                    for v in T.vectorized(XT):
                                        acc[r, v] = acc[r, v] - xf[at + r * SH * Wp + v * SW]
                            for j in T.unroll(BLOCK):
                                if _digit(code, j) == 1:
                                    for r in T.unroll(RT):
                                        for v in T.vectorized(XT):
                                            out[j, r, v] = out[j, r, v] + acc[r, v]
                                if _digit(code, j) == -1:
                                    for r in T.unroll(RT):
                                        for v in T.vectorized(XT):
                                            out[j, r, v] = out[j, r, v] - acc[r, v]
                    for j in T.unroll(BLOCK):
                        if (b % BPG) * BLOCK + j < COUT_G:
                            for r in T.unroll(RT):
                                for v in T.vectorized(XT):
                                    y[band // BANDS, (b // BPG) * COUT_G + (b % BPG) * BLOCK + j,
                                      (band % BANDS) * RT + r, tile * XT + v] = _epilogue(
                                        T, out[j, r, v], scale[(b // BPG) * COUT_G + (b % BPG) * BLOCK + j],
                                        bias[(b // BPG) * COUT_G + (b % BPG) * BLOCK + j], act)

    return ternary_conv


@functools.lru_cache(maxsize=None)
def gpu_kernel(geom: TernaryGeometry, activation: str):
    """The GPU PrimFunc: one thread per (output pixel, channel block); arguments as `cpu_kernel`."""
    from tvm.script import tirx as T

    N, C, Hp, Wp, Cout, OH, OW = geom.n, geom.c, geom.hp, geom.wp, geom.cout, geom.oh, geom.ow
    SH, SW = geom.stride
    K, CIN_G, COUT_G, BPG = geom.k, geom.cin_g, geom.cout_g, geom.blocks_per_group
    BLOCKS = BPG * geom.group
    TOTAL = N * BLOCKS * OH * OW
    THREADS = GPU_THREADS
    GRID = -(-TOTAL // THREADS)
    act = activation

    @T.prim_func
    def ternary_conv(xp: T.Buffer((N, C, Hp, Wp), "float32"), idx_handle: T.handle,
                     ptr: T.Buffer((2 * CODES * BLOCKS + 1,), "int32"), offsets: T.Buffer((K,), "int32"),
                     scale: T.Buffer((Cout,), "float32"), bias: T.Buffer((Cout,), "float32"),
                     y: T.Buffer((N, Cout, OH, OW), "float32")):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, KERNEL_ATTR: True})
        # The tap count varies per layer; a symbolic length lets same-shape layers share the code.
        taps = T.int32()
        idx = T.match_buffer(idx_handle, (taps,), "int16")
        xf = T.decl_buffer((N * C * Hp * Wp,), "float32", data=xp.data)
        for grid in T.thread_binding(GRID, thread="blockIdx.x"):
            for thread in T.thread_binding(THREADS, thread="threadIdx.x"):
                if grid * THREADS + thread < TOTAL:
                    out = T.alloc_buffer((BLOCK,), "float32", scope="local")
                    acc = T.alloc_buffer((1,), "float32", scope="local")
                    e = grid * THREADS + thread
                    b = (e // (OH * OW)) % BLOCKS
                    base = ((e // (BLOCKS * OH * OW)) * C + (b // BPG) * CIN_G) * (Hp * Wp) \
                        + ((e // OW) % OH) * SH * Wp + (e % OW) * SW
                    for j in T.unroll(BLOCK):
                        out[j] = T.float32(0)
                    for code in T.unroll(CODES):
                        if _canonical(code):
                            acc[0] = T.float32(0)
                            for p in range(ptr[2 * (b * CODES + code)], ptr[2 * (b * CODES + code) + 1]):
                                acc[0] = acc[0] + xf[base + offsets[T.Cast("int32", idx[p])]]
                            for p in range(ptr[2 * (b * CODES + code) + 1], ptr[2 * (b * CODES + code) + 2]):
                                acc[0] = acc[0] - xf[base + offsets[T.Cast("int32", idx[p])]]
                            for j in T.unroll(BLOCK):
                                if _digit(code, j) == 1:
                                    out[j] = out[j] + acc[0]
                                if _digit(code, j) == -1:
                                    out[j] = out[j] - acc[0]
                    for j in T.unroll(BLOCK):
                        if (b % BPG) * BLOCK + j < COUT_G:
                            y[e // (BLOCKS * OH * OW), (b // BPG) * COUT_G + (b % BPG) * BLOCK + j,
                              (e // OW) % OH, e % OW] = _epilogue(
                                T, out[j], scale[(b // BPG) * COUT_G + (b % BPG) * BLOCK + j],
                                bias[(b // BPG) * COUT_G + (b % BPG) * BLOCK + j], act)

    return ternary_conv


def emit_ternary_conv(bb, x, weights: np.ndarray, scale, bias, attrs: TernaryConvAttrs,
                      gpu: bool, vector_floats: int, vector_registers: int):
    """Emit a TernaryConv into the Relax block builder `bb`: zero padding, then our kernel.

    Args:
        bb: the relax.BlockBuilder of the importer.
        x: the Relax float32 input [N, C, H, W] with a static shape.
        weights: int8 ternary filters [Cout, C/group, kH, kW].
        scale, bias: Relax float32 tensors [Cout].
        attrs: the node's attributes.
        gpu: emit the thread-bound GPU kernel instead of the CPU one.
        vector_floats, vector_registers: SIMD lanes and registers of the CPU target (tile size).
    Returns:
        The Relax expression of Y [N, Cout, OH, OW].
    Raises:
        ExportError: dynamic shapes, a non-float32 input or filters too large for the kernel.
    """
    from tvm import relax

    shape = x.ty.shape
    if x.ty.dtype != "float32" or shape is None or not all(isinstance(d, int) or hasattr(d, "value")
                                                             for d in shape.values):
        raise ExportError(
            f"the TVM TernaryConv kernel needs a float32 input of static shape, got {x.ty}; "
            "export with a fixed input size"
        )
    dims = [int(d) for d in shape.values]
    geom = TernaryGeometry.of(dims, int(weights.shape[0]), attrs)
    tables = encode_weights(weights, geom)
    pt, pl, pb, pr = attrs.pads
    if any(attrs.pads):
        x = bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, pt, pb, pl, pr]))
    func = gpu_kernel(geom, attrs.activation) if gpu else cpu_kernel(
        geom, attrs.activation, vector_floats, vector_registers)
    gvar = bb.add_func(func, "ternary_conv")
    consts = [relax.const(tables.idx), relax.const(tables.ptr), relax.const(tables.offsets)]
    out = relax.TensorType([geom.n, geom.cout, geom.oh, geom.ow], "float32")
    return relax.call_tir(gvar, [x, *consts, scale, bias], out)
