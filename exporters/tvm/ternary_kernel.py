"""`ai.lbdeploy::TernaryConv` as TVM TIR that only adds and subtracts.

The weights are constants known at compile time, so they are turned into a compact sign/index
form baked into the module (no float weights at all):

    idx[int16]       for each output channel o: the flat filter indices k = (c*kH + i)*kW + j of its
                     +1 weights, then of its -1 weights (2 bytes per non-zero weight)
    ptr[int32]       2*Cout+1 list boundaries: +1 list of o = idx[ptr[2o]:ptr[2o+1]],
                     -1 list = idx[ptr[2o+1]:ptr[2o+2]]
    offsets[int32]   one entry per filter index k (not per non-zero): the element offset of tap k
                     in the zero-padded input, c*Hp*Wp + i*dH*Wp + j*dW

The CPU kernel (one algorithm with lbdeploy's other kernels): for a register tile of RT output rows
x XT output columns of one output channel, every decoded weight index is reused for RT*XT/lanes
vector additions (or subtractions) of input loaded straight from the padded input; the output
channels of a row band run back to back over the same input rows, which stay in cache, and each
tile ends with the fused epilogue `act(scale[o] * acc + bias[o])` — the only multiply. Rows are
spread over cores (`T.parallel`), columns over SIMD lanes (`T.vectorized`). The GPU kernel gives
one output element to one thread (blockIdx/threadIdx bound) with the same lists.

To change the tiling, edit `cpu_tile`; to add an activation, extend `_epilogue`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lbdeploy.errors import ExportError
from lbdeploy.ops.ternary_conv import TernaryConvAttrs

INDEX_LIMIT = np.iinfo(np.int16).max  # filter indices must fit the int16 lists
GPU_THREADS = 256
KERNEL_ATTR = "lbdeploy.ternary_conv"  # marks the PrimFunc as already scheduled


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
    """The compact sign/index weight form (see the module docstring)."""

    idx: np.ndarray  # int16 [nnz]
    ptr: np.ndarray  # int32 [2*Cout+1]
    offsets: np.ndarray  # int32 [K]

    @property
    def nbytes(self) -> int:
        """Bytes the tables take in the module."""
        return self.idx.nbytes + self.ptr.nbytes + self.offsets.nbytes


def encode_weights(weights: np.ndarray, geom: TernaryGeometry) -> TernaryTables:
    """Turn int8 ternary filters [Cout, Cin/g, kH, kW] into the sign/index tables.

    Raises:
        ExportError: a filter has more weights than the int16 indices can address.
    """
    if geom.k > INDEX_LIMIT:
        raise ExportError(
            f"TernaryConv filters of {geom.k} weights exceed the TVM kernel's int16 index range "
            f"({INDEX_LIMIT}); split the layer or use the ORT backend"
        )
    flat = np.asarray(weights, np.int8).reshape(geom.cout, geom.k)
    lists, ptr = [], [0]
    for row in flat:
        for sign in (1, -1):
            nonzero = np.flatnonzero(row == sign)
            lists.append(nonzero)
            ptr.append(ptr[-1] + nonzero.size)
    idx = np.concatenate(lists).astype(np.int16) if lists else np.zeros(0, np.int16)
    k = np.arange(geom.k)
    c, tap = np.divmod(k, geom.kh * geom.kw)
    i, j = np.divmod(tap, geom.kw)
    offsets = c * geom.hp * geom.wp + i * geom.dilation[0] * geom.wp + j * geom.dilation[1]
    # An empty buffer cannot be passed to the kernel; one unused entry keeps shapes non-empty.
    if idx.size == 0:
        idx = np.zeros(1, np.int16)
    return TernaryTables(idx, np.asarray(ptr, np.int32), offsets.astype(np.int32))


def cpu_tile(geom: TernaryGeometry, vector_floats: int) -> tuple[int, int]:
    """Register tile (rows RT, columns XT) of the CPU kernel for SIMD registers of `vector_floats`.

    XT is the widest divisor of OW up to 4 registers; RT stacks rows while the accumulators fit
    in 8 registers, so each loaded weight index feeds RT*XT/lanes independent additions.
    """
    widest = 4 * vector_floats
    xt = max(d for d in range(1, min(widest, geom.ow) + 1) if geom.ow % d == 0)
    rt = max(r for r in (4, 2, 1) if geom.oh % r == 0 and r * xt <= 8 * vector_floats)
    return rt, xt


def _epilogue(T, value, scale, bias, activation: str):
    y = value * scale + bias
    if activation == "relu":
        return T.max(y, T.float32(0))
    if activation == "sigmoid":
        return T.float32(1) / (T.float32(1) + T.exp(-y))
    return y


def cpu_kernel(geom: TernaryGeometry, nnz: int, activation: str, vector_floats: int):
    """The CPU PrimFunc (xp padded [N,C,Hp,Wp], idx, ptr, offsets, scale, bias) -> y [N,Cout,OH,OW]."""
    from tvm.script import tirx as T

    N, C, Hp, Wp, Cout, OH, OW = geom.n, geom.c, geom.hp, geom.wp, geom.cout, geom.oh, geom.ow
    SH, SW = geom.stride
    K, CIN_G, COUT_G = geom.k, geom.cin_g, geom.cout // geom.group
    RT, XT = cpu_tile(geom, vector_floats)
    BANDS, TILES = OH // RT, OW // XT
    act = activation

    @T.prim_func
    def ternary_conv(xp: T.Buffer((N, C, Hp, Wp), "float32"), idx: T.Buffer((nnz,), "int16"),
                     ptr: T.Buffer((2 * Cout + 1,), "int32"), offsets: T.Buffer((K,), "int32"),
                     scale: T.Buffer((Cout,), "float32"), bias: T.Buffer((Cout,), "float32"),
                     y: T.Buffer((N, Cout, OH, OW), "float32")):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, KERNEL_ATTR: True})
        xf = T.decl_buffer((N * C * Hp * Wp,), "float32", data=xp.data)
        for band in T.parallel(N * BANDS):
            for o in range(Cout):
                for tile in range(TILES):
                    acc = T.alloc_buffer((RT, XT), "float32", scope="local")
                    base = ((band // BANDS) * C + (o // COUT_G) * CIN_G) * (Hp * Wp) \
                        + (band % BANDS) * RT * SH * Wp + tile * XT * SW
                    for r in T.unroll(RT):
                        for v in T.vectorized(XT):
                            acc[r, v] = T.float32(0)
                    for p in range(ptr[2 * o], ptr[2 * o + 1]):
                        at = base + offsets[T.Cast("int32", idx[p])]
                        for r in T.unroll(RT):
                            for v in T.vectorized(XT):
                                acc[r, v] = acc[r, v] + xf[at + r * SH * Wp + v * SW]
                    for p in range(ptr[2 * o + 1], ptr[2 * o + 2]):
                        at = base + offsets[T.Cast("int32", idx[p])]
                        for r in T.unroll(RT):
                            for v in T.vectorized(XT):
                                acc[r, v] = acc[r, v] - xf[at + r * SH * Wp + v * SW]
                    for r in T.unroll(RT):
                        for v in T.vectorized(XT):
                            y[band // BANDS, o, (band % BANDS) * RT + r, tile * XT + v] = _epilogue(
                                T, acc[r, v], scale[o], bias[o], act)

    return ternary_conv


def gpu_kernel(geom: TernaryGeometry, nnz: int, activation: str):
    """The GPU PrimFunc: one thread per output element, same arguments as `cpu_kernel`."""
    from tvm.script import tirx as T

    N, C, Hp, Wp, Cout, OH, OW = geom.n, geom.c, geom.hp, geom.wp, geom.cout, geom.oh, geom.ow
    SH, SW = geom.stride
    K, CIN_G, COUT_G = geom.k, geom.cin_g, geom.cout // geom.group
    TOTAL = N * Cout * OH * OW
    THREADS = GPU_THREADS
    BLOCKS = -(-TOTAL // THREADS)
    act = activation

    @T.prim_func
    def ternary_conv(xp: T.Buffer((N, C, Hp, Wp), "float32"), idx: T.Buffer((nnz,), "int16"),
                     ptr: T.Buffer((2 * Cout + 1,), "int32"), offsets: T.Buffer((K,), "int32"),
                     scale: T.Buffer((Cout,), "float32"), bias: T.Buffer((Cout,), "float32"),
                     y: T.Buffer((N, Cout, OH, OW), "float32")):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, KERNEL_ATTR: True})
        xf = T.decl_buffer((N * C * Hp * Wp,), "float32", data=xp.data)
        yf = T.decl_buffer((TOTAL,), "float32", data=y.data)
        for block in T.thread_binding(BLOCKS, thread="blockIdx.x"):
            for thread in T.thread_binding(THREADS, thread="threadIdx.x"):
                if block * THREADS + thread < TOTAL:
                    acc = T.alloc_buffer((1,), "float32", scope="local")
                    e = block * THREADS + thread
                    o = (e // (OH * OW)) % Cout
                    base = ((e // (Cout * OH * OW)) * C + (o // COUT_G) * CIN_G) * (Hp * Wp) \
                        + ((e // OW) % OH) * SH * Wp + (e % OW) * SW
                    acc[0] = T.float32(0)
                    for p in range(ptr[2 * o], ptr[2 * o + 1]):
                        acc[0] = acc[0] + xf[base + offsets[T.Cast("int32", idx[p])]]
                    for p in range(ptr[2 * o + 1], ptr[2 * o + 2]):
                        acc[0] = acc[0] - xf[base + offsets[T.Cast("int32", idx[p])]]
                    yf[e] = _epilogue(T, acc[0], scale[o], bias[o], act)

    return ternary_conv


def emit_ternary_conv(bb, x, weights: np.ndarray, scale, bias, attrs: TernaryConvAttrs,
                      gpu: bool, vector_floats: int):
    """Emit a TernaryConv into the Relax block builder `bb`: zero padding, then our kernel.

    Args:
        bb: the relax.BlockBuilder of the importer.
        x: the Relax float32 input [N, C, H, W] with a static shape.
        weights: int8 ternary filters [Cout, C/group, kH, kW].
        scale, bias: Relax float32 tensors [Cout].
        attrs: the node's attributes.
        gpu: emit the thread-bound GPU kernel instead of the CPU one.
        vector_floats: SIMD lanes of the CPU target (tiles the CPU kernel).
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
    nnz = int(tables.idx.size)
    func = gpu_kernel(geom, nnz, attrs.activation) if gpu else cpu_kernel(
        geom, nnz, attrs.activation, vector_floats)
    gvar = bb.add_func(func, "ternary_conv")
    consts = [relax.const(tables.idx), relax.const(tables.ptr), relax.const(tables.offsets)]
    out = relax.TensorType([geom.n, geom.cout, geom.oh, geom.ow], "float32")
    return relax.call_tir(gvar, [x, *consts, scale, bias], out)
