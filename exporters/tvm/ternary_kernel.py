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

    idx[uint16]     tap indices k = (c*kH + i)*kW + j, grouped by block, then by input-channel
                    chunk (CPU: see `chunk_count`; GPU: one), then by pattern (the 40 codes up to
                    sign, code = q + 41), + taps then - taps (2 bytes per tap with a non-zero pattern)
    ptr[int32]      list boundaries: list l = (b*chunks + chunk)*40 + q has its + taps at
                    idx[ptr[2l] : ptr[2l+1]], its - taps up to ptr[2l+2]
    offsets[int32]  one per filter tap (not per non-zero): its offset c*Hp*Wp + i*dH*Wp + j*dW in
                    the zero-padded input

CPU kernel: rows are spread over cores (`T.parallel`), a register tile of RT rows x XT columns over
SIMD lanes (`T.vectorized`); input channels are split into chunks whose tile input fits L1, and
every channel block runs over one chunk before the next (partial sums wait in the output); the
last chunk ends with the fused epilogue act(scale[o] * acc + bias[o]), the only multiply. The GPU
kernel gives one (output pixel, channel block) to one thread.

To change the tiling, edit `cpu_tile`; to add an activation, extend `_epilogue`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

from lbdeploy.errors import ExportError
from lbdeploy.ops.ternary_conv import TernaryConvAttrs

BLOCK = 4  # output channels sharing pattern sums (as lbdeploy/kernels/core/patterns.h)
CODES = 3 ** BLOCK  # pattern codes sum_j (digit_j + 1) * 3^j
PATTERNS = CODES // 2  # codes up to sign: the canonical ones, PATTERNS + 1 .. CODES - 1
INPUT_TILE_BYTES = 40 * 1024  # padded input of one tile and channel chunk, kept in L1 by the CPU kernel
INDEX_LIMIT = np.iinfo(np.uint16).max  # filter tap indices must fit the uint16 lists
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

    idx: np.ndarray  # uint16 [taps]
    ptr: np.ndarray  # int32 [2 * PATTERNS * chunks * blocks + 1]
    offsets: np.ndarray  # int32 [K]

    @property
    def nbytes(self) -> int:
        """Bytes the tables take in the module."""
        return self.idx.nbytes + self.ptr.nbytes + self.offsets.nbytes


def pattern_digits(code: int) -> tuple[int, ...]:
    """The BLOCK digits in {-1, 0, +1} of a pattern code."""
    return tuple((code // 3 ** j) % 3 - 1 for j in range(BLOCK))


def encode_weights(weights: np.ndarray, geom: TernaryGeometry, chunks: int = 1) -> TernaryTables:
    """Turn int8 ternary filters [Cout, Cin/g, kH, kW] into the pattern tables.

    Args:
        weights: the int8 filters.
        geom: the layer geometry.
        chunks: input-channel chunks per group (see `chunk_count`); the lists are split by chunk.
    Raises:
        ExportError: a filter has more weights than the uint16 indices can address.
    """
    if geom.k - 1 > INDEX_LIMIT:
        raise ExportError(
            f"TernaryConv filters of {geom.k} weights exceed the TVM kernel's uint16 index range "
            f"({INDEX_LIMIT + 1} taps); split the layer or use the ORT backend"
        )
    flat = np.asarray(weights, np.int8).reshape(geom.group, geom.cout_g, geom.k)
    blocks = np.zeros((geom.group, geom.blocks_per_group * BLOCK, geom.k), np.int64)
    blocks[:, : geom.cout_g] = flat
    blocks = blocks.reshape(-1, BLOCK, geom.k)  # [group * blocks_per_group, BLOCK, K]
    codes = ((blocks + 1) * (3 ** np.arange(BLOCK))[None, :, None]).sum(axis=1)  # [blocks, K]
    # code and CODES-1-code are the same pattern with opposite signs; the canonical one (last
    # non-zero digit +1, code > PATTERNS) collects both, the other's taps go to its minus list.
    block, tap = np.nonzero(codes != PATTERNS)
    code = codes[block, tap]
    minus = code < PATTERNS
    pattern = np.where(minus, CODES - 1 - code, code) - (PATTERNS + 1)
    chunk = (tap // (geom.kh * geom.kw)) // chunk_channels(geom.cin_g, chunks)
    lists = ((block * chunks + chunk) * PATTERNS + pattern) * 2 + minus
    order = np.argsort(lists, kind="stable")  # taps stay in ascending order within a list
    counts = np.bincount(lists, minlength=2 * PATTERNS * chunks * codes.shape[0])
    ptr = np.concatenate([[0], np.cumsum(counts)])
    idx = tap[order].astype(np.uint16)
    k = np.arange(geom.k)
    c, tap = np.divmod(k, geom.kh * geom.kw)
    i, j = np.divmod(tap, geom.kw)
    offsets = c * geom.hp * geom.wp + i * geom.dilation[0] * geom.wp + j * geom.dilation[1]
    # An empty buffer cannot be passed to the kernel; one unused entry keeps shapes non-empty.
    if idx.size == 0:
        idx = np.zeros(1, np.uint16)
    return TernaryTables(idx, ptr.astype(np.int32), offsets.astype(np.int32))


def row_alignment_padding(geom: TernaryGeometry, vector_floats: int) -> int:
    """Extra zero columns on the right of the padded input that make its rows a whole number
    of SIMD registers, so the kernel's unshifted taps load aligned vectors (a 128->128 layer at
    64x64 or 128x128 got 5-8% faster on AVX-512). 0 for rows under 4 registers, where the extra
    columns would cost more memory than the alignment saves."""
    if geom.wp < 4 * vector_floats:
        return 0
    return -geom.wp % vector_floats


def chunk_channels(cin_g: int, chunks: int) -> int:
    """Input channels per chunk when `cin_g` channels are split into `chunks` (the last may be short)."""
    return -(-cin_g // chunks)


def chunk_count(geom: TernaryGeometry, vector_floats: int, vector_registers: int) -> int:
    """Input-channel chunks of the CPU kernel: each tile's padded input rows for one chunk
    (INPUT_TILE_BYTES at most) stay in L1 while every channel block runs over them, instead of
    streaming the whole input from L2 once per block."""
    rt, xt = cpu_tile(geom, vector_floats, vector_registers)
    rows = (rt - 1) * geom.stride[0] + (geom.kh - 1) * geom.dilation[0] + 1
    cols = (xt - 1) * geom.stride[1] + (geom.kw - 1) * geom.dilation[1] + 1
    per_chunk = max(1, INPUT_TILE_BYTES // (4 * rows * cols))
    return -(-geom.cin_g // per_chunk)


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
    if activation == "relu":  # not T.max: LLVM's maxnum turns NaN into 0; relu(NaN) is NaN (docs/ops/TernaryConv.md)
        return T.Select(y < T.float32(0), T.float32(0), y)
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


def pattern_pass_macro(rt: int, xt: int, sh: int, sw: int, wp: int, acc_dtype: str):
    """The pattern pass shared by the CPU kernels (float TernaryConv, integer QTernaryConv), as a
    TVMScript macro `pattern_pass(out, acc, xf, idx, ptr, offsets, base, list0)`.

    For each of the PATTERNS patterns q (unrolled), acc [rt, xt] = the sum of the flat input `xf` at
    the tile `base` + offset of every + tap of list `list0 + q`, minus every - tap (each loaded
    value cast to `acc_dtype`), then acc is added to or subtracted from out[j] for each digit
    j = +1 / -1 of q (straight-line code). Tile rows lie `sh * wp` elements apart, columns `sw`.
    """
    from tvm.script import tirx as T

    @T.macro
    def pattern_pass(out, acc, xf, idx, ptr, offsets, base, list0):
        for q in T.unroll(PATTERNS):
            entry = 2 * (list0 + q)
            for r in T.unroll(rt):
                for v in T.vectorized(xt):
                    acc[r, v] = T.Cast(acc_dtype, 0)
            for p in range(ptr[entry], ptr[entry + 1]):
                at = base + offsets[T.Cast("int32", idx[p])]
                for r in T.unroll(rt):
                    for v in T.vectorized(xt):
                        acc[r, v] = acc[r, v] + T.Cast(acc_dtype, xf[at + r * sh * wp + v * sw])
            for p in range(ptr[entry + 1], ptr[entry + 2]):
                at = base + offsets[T.Cast("int32", idx[p])]
                for r in T.unroll(rt):
                    for v in T.vectorized(xt):
                        acc[r, v] = acc[r, v] - T.Cast(acc_dtype, xf[at + r * sh * wp + v * sw])
            for j in T.unroll(BLOCK):
                if _digit(q + PATTERNS + 1, j) == 1:
                    for r in T.unroll(rt):
                        for v in T.vectorized(xt):
                            out[j, r, v] = out[j, r, v] + acc[r, v]
                if _digit(q + PATTERNS + 1, j) == -1:
                    for r in T.unroll(rt):
                        for v in T.vectorized(xt):
                            out[j, r, v] = out[j, r, v] - acc[r, v]

    return pattern_pass


@functools.lru_cache(maxsize=None)  # layers of the same geometry share one PrimFunc
def cpu_kernel(geom: TernaryGeometry, activation: str, vector_floats: int, vector_registers: int):
    """The CPU PrimFunc (xp padded [N,C,Hp,Wp], idx, ptr, offsets, scale, bias) -> y [N,Cout,OH,OW].

    The tables must be encoded with `chunk_count(geom, vector_floats, vector_registers)` chunks.
    """
    from tvm.script import tirx as T

    N, C, Hp, Wp, Cout, OH, OW = geom.n, geom.c, geom.hp, geom.wp, geom.cout, geom.oh, geom.ow
    SH, SW = geom.stride
    K, CIN_G, COUT_G, BPG = geom.k, geom.cin_g, geom.cout_g, geom.blocks_per_group
    BLOCKS = BPG * geom.group
    RT, XT = cpu_tile(geom, vector_floats, vector_registers)
    CHUNKS = chunk_count(geom, vector_floats, vector_registers)
    BANDS, TILES = OH // RT, OW // XT
    act = activation
    pattern_pass = pattern_pass_macro(RT, XT, SH, SW, Wp, "float32")

    @T.prim_func
    def ternary_conv(xp: T.Buffer((N, C, Hp, Wp), "float32"), idx_handle: T.handle,
                     ptr: T.Buffer((2 * PATTERNS * CHUNKS * BLOCKS + 1,), "int32"), offsets: T.Buffer((K,), "int32"),
                     scale: T.Buffer((Cout,), "float32"), bias: T.Buffer((Cout,), "float32"),
                     y: T.Buffer((N, Cout, OH, OW), "float32")):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, KERNEL_ATTR: True})
        # The tap count varies per layer; a symbolic length lets same-shape layers share the code.
        taps = T.int32()
        idx = T.match_buffer(idx_handle, (taps,), "uint16")
        xf = T.decl_buffer((N * C * Hp * Wp,), "float32", data=xp.data)
        for band in T.parallel(N * BANDS):
            for tile in range(TILES):
                # Chunks of input channels outside the channel blocks: one chunk's tile input
                # stays in L1 for all blocks; partial sums wait in y between chunks.
                for chunk in range(CHUNKS):
                    for b in range(BLOCKS):
                        out = T.alloc_buffer((BLOCK, RT, XT), "float32", scope="local")
                        acc = T.alloc_buffer((RT, XT), "float32", scope="local")
                        base = ((band // BANDS) * C + (b // BPG) * CIN_G) * (Hp * Wp) \
                            + (band % BANDS) * RT * SH * Wp + tile * XT * SW
                        for j in T.unroll(BLOCK):
                            if (b % BPG) * BLOCK + j < COUT_G and chunk > 0:
                                for r in T.unroll(RT):
                                    for v in T.vectorized(XT):
                                        out[j, r, v] = y[band // BANDS, (b // BPG) * COUT_G + (b % BPG) * BLOCK + j,
                                                         (band % BANDS) * RT + r, tile * XT + v]
                            else:
                                for r in T.unroll(RT):
                                    for v in T.vectorized(XT):
                                        out[j, r, v] = T.float32(0)
                        pattern_pass(out, acc, xf, idx, ptr, offsets, base, (b * CHUNKS + chunk) * PATTERNS)
                        for j in T.unroll(BLOCK):
                            if (b % BPG) * BLOCK + j < COUT_G:
                                if chunk == CHUNKS - 1:
                                    for r in T.unroll(RT):
                                        for v in T.vectorized(XT):
                                            y[band // BANDS, (b // BPG) * COUT_G + (b % BPG) * BLOCK + j,
                                              (band % BANDS) * RT + r, tile * XT + v] = _epilogue(
                                                T, out[j, r, v], scale[(b // BPG) * COUT_G + (b % BPG) * BLOCK + j],
                                                bias[(b // BPG) * COUT_G + (b % BPG) * BLOCK + j], act)
                                else:
                                    for r in T.unroll(RT):
                                        for v in T.vectorized(XT):
                                            y[band // BANDS, (b // BPG) * COUT_G + (b % BPG) * BLOCK + j,
                                              (band % BANDS) * RT + r, tile * XT + v] = out[j, r, v]

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
                     ptr: T.Buffer((2 * PATTERNS * BLOCKS + 1,), "int32"), offsets: T.Buffer((K,), "int32"),
                     scale: T.Buffer((Cout,), "float32"), bias: T.Buffer((Cout,), "float32"),
                     y: T.Buffer((N, Cout, OH, OW), "float32")):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, KERNEL_ATTR: True})
        # The tap count varies per layer; a symbolic length lets same-shape layers share the code.
        taps = T.int32()
        idx = T.match_buffer(idx_handle, (taps,), "uint16")
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
                    for q in T.unroll(PATTERNS):
                        acc[0] = T.float32(0)
                        for p in range(ptr[2 * (b * PATTERNS + q)], ptr[2 * (b * PATTERNS + q) + 1]):
                            acc[0] = acc[0] + xf[base + offsets[T.Cast("int32", idx[p])]]
                        for p in range(ptr[2 * (b * PATTERNS + q) + 1], ptr[2 * (b * PATTERNS + q) + 2]):
                            acc[0] = acc[0] - xf[base + offsets[T.Cast("int32", idx[p])]]
                        for j in T.unroll(BLOCK):
                            if _digit(q + PATTERNS + 1, j) == 1:
                                out[j] = out[j] + acc[0]
                            if _digit(q + PATTERNS + 1, j) == -1:
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
    pt, pl, pb, pr = attrs.pads
    if not gpu:
        extra = row_alignment_padding(geom, vector_floats)
        geom = replace(geom, wp=geom.wp + extra)
        pr += extra
    chunks = 1 if gpu else chunk_count(geom, vector_floats, vector_registers)
    tables = encode_weights(weights, geom, chunks)
    if pt or pl or pb or pr:
        x = bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, pt, pb, pl, pr]))
    func = gpu_kernel(geom, attrs.activation) if gpu else cpu_kernel(
        geom, attrs.activation, vector_floats, vector_registers)
    gvar = bb.add_func(func, "ternary_conv")
    consts = [relax.const(tables.idx), relax.const(tables.ptr), relax.const(tables.offsets)]
    out = relax.TensorType([geom.n, geom.cout, geom.oh, geom.ow], "float32")
    return relax.call_tir(gvar, [x, *consts, scale, bias], out)
