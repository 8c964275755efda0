"""`ai.lbdeploy::QTernaryConv` (uint8 in, uint8 out) as TVM TIR: exact integer sums, then one
float32 requantization per output.

The algorithm and the weight tables are the float kernel's (ternary_kernel.py: pattern-shared
sums over 4-channel blocks, the uint16 tap lists of `encode_weights`, the register tile of
`cpu_tile`, the pattern pass `pattern_pass_macro`), on integers:

    Xpad            X padded with x_zero_point (real 0), a separate Relax pad in front
    raw[o]          sum over + taps of Xpad minus sum over - taps, int32 lanes (uint8 loads
                    widened), exact: |raw| <= 255 * K <= 255 * 65536 < 2^31
    acc[o]          raw[o] - zsum[o], zsum[o] = x_zero_point * sum_k W[o, k] (a per-channel
                    constant, since the padding holds x_zero_point too): acc = sum W * (Xpad - x_zp)
    v               fma(m[o], float32(acc), b[o]) (one rounding: llvm.fma, never a separate
                    multiply and add); max(v, 0) for relu (real-domain relu)
    Y               round_half_to_even(clamp(v, low, 255 - y_zero_point)) + y_zero_point

with m and b the float32 constants of the op's specified rounding, computed at import time by
lbdeploy.ops.qternary_conv.requantization_constants (which refuses degenerate scales), and the
clamp of the C++ epilogue (qepilogue_kernel.h): low = 0 for relu, else -y_zero_point. Bit-exact to
the reference. Accumulators are int32, as wide as the float kernel's
lanes: no input-channel chunks are needed for exactness, and a uint8 tile input of 128 channels
(3 x 66 bytes each at 64x64) fits L1, so the kernel runs one chunk (no partial sums to keep).

To change the requantization, edit `_requantize`.
"""

from __future__ import annotations

import functools

import numpy as np

from lbdeploy.exporters.tvm.ternary_kernel import (
    BLOCK, KERNEL_ATTR, PATTERNS, TernaryGeometry, cpu_tile, encode_weights, pattern_pass_macro,
)
from lbdeploy.errors import ExportError, QuantizationError
from lbdeploy.ops.qternary_conv import requantization_constants
from lbdeploy.ops.ternary_conv import TernaryConvAttrs


def zero_point_sums(weights: np.ndarray, x_zero_point: int) -> np.ndarray:
    """int32 [Cout]: x_zero_point * sum_k W[o, k], what the raw sums of Xpad carry beyond acc."""
    flat = np.asarray(weights, np.int64).reshape(weights.shape[0], -1)
    return (int(x_zero_point) * flat.sum(axis=1)).astype(np.int32)


def _requantize(T, raw, zsum, m, b, activation: str, y_zero_point: int):
    v = T.call_llvm_pure_intrin("float32", "llvm.fma", T.Cast("float32", raw - zsum), m, b)
    low = 0 if activation == "relu" else -y_zero_point
    v = T.min(T.max(v, T.float32(low)), T.float32(255 - y_zero_point))
    # nearbyint rounds half to even (the default rounding mode); the bounds are integers, so the sum is in [0, 255].
    return T.Cast("uint8", T.nearbyint(v) + T.float32(y_zero_point))


@functools.lru_cache(maxsize=None)  # layers of the same geometry and output zero point share one PrimFunc
def qcpu_kernel(geom: TernaryGeometry, activation: str, y_zero_point: int, vector_lanes: int, vector_registers: int):
    """The CPU PrimFunc (xp uint8 padded [N,C,Hp,Wp], idx, ptr, offsets, zsum int32, m, b float32)
    -> y uint8 [N,Cout,OH,OW]. The tables must be encoded with one chunk; `vector_lanes` are the
    32-bit lanes of a SIMD register."""
    from tvm.script import tirx as T

    N, C, Hp, Wp, Cout, OH, OW = geom.n, geom.c, geom.hp, geom.wp, geom.cout, geom.oh, geom.ow
    SH, SW = geom.stride
    K, CIN_G, COUT_G, BPG = geom.k, geom.cin_g, geom.cout_g, geom.blocks_per_group
    BLOCKS = BPG * geom.group
    RT, XT = cpu_tile(geom, vector_lanes, vector_registers)
    BANDS, TILES = OH // RT, OW // XT
    act, y_zp = activation, y_zero_point
    pattern_pass = pattern_pass_macro(RT, XT, SH, SW, Wp, "int32")

    @T.prim_func
    def qternary_conv(xp: T.Buffer((N, C, Hp, Wp), "uint8"), idx_handle: T.handle,
                      ptr: T.Buffer((2 * PATTERNS * BLOCKS + 1,), "int32"), offsets: T.Buffer((K,), "int32"),
                      zsum: T.Buffer((Cout,), "int32"), m: T.Buffer((Cout,), "float32"),
                      bias: T.Buffer((Cout,), "float32"), y: T.Buffer((N, Cout, OH, OW), "uint8")):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, KERNEL_ATTR: True})
        taps = T.int32()
        idx = T.match_buffer(idx_handle, (taps,), "uint16")
        xf = T.decl_buffer((N * C * Hp * Wp,), "uint8", data=xp.data)
        for band in T.parallel(N * BANDS):
            for tile in range(TILES):
                for b in range(BLOCKS):
                    out = T.alloc_buffer((BLOCK, RT, XT), "int32", scope="local")
                    acc = T.alloc_buffer((RT, XT), "int32", scope="local")
                    base = ((band // BANDS) * C + (b // BPG) * CIN_G) * (Hp * Wp) \
                        + (band % BANDS) * RT * SH * Wp + tile * XT * SW
                    for j in T.unroll(BLOCK):
                        for r in T.unroll(RT):
                            for v in T.vectorized(XT):
                                out[j, r, v] = 0
                    pattern_pass(out, acc, xf, idx, ptr, offsets, base, b * PATTERNS)
                    for j in T.unroll(BLOCK):
                        if (b % BPG) * BLOCK + j < COUT_G:
                            for r in T.unroll(RT):
                                for v in T.vectorized(XT):
                                    y[band // BANDS, (b // BPG) * COUT_G + (b % BPG) * BLOCK + j,
                                      (band % BANDS) * RT + r, tile * XT + v] = _requantize(
                                        T, out[j, r, v], zsum[(b // BPG) * COUT_G + (b % BPG) * BLOCK + j],
                                        m[(b // BPG) * COUT_G + (b % BPG) * BLOCK + j],
                                        bias[(b // BPG) * COUT_G + (b % BPG) * BLOCK + j], act, y_zp)

    return qternary_conv


def emit_qternary_conv(bb, x, weights: np.ndarray, quant: dict, attrs: TernaryConvAttrs, gpu: bool,
                       vector_floats: int, vector_registers: int):
    """Emit a QTernaryConv into the Relax block builder `bb`: padding with x_zero_point, then our kernel.

    Args:
        bb: the relax.BlockBuilder of the importer.
        x: the Relax uint8 input [N, C, H, W] with a static shape.
        weights: int8 ternary filters [Cout, C/group, kH, kW].
        quant: numpy values of the op's constant inputs x_scale, x_zero_point, scale, bias,
            y_scale, y_zero_point (named as in lbdeploy.ops.qternary_conv.INPUTS).
        attrs: the node's attributes (activation none or relu).
        gpu: True for a GPU target (refused: there is no GPU kernel yet).
        vector_floats, vector_registers: 32-bit SIMD lanes and registers of the CPU target.
    Returns:
        The Relax expression of Y uint8 [N, Cout, OH, OW].
    Raises:
        ExportError: a GPU target, dynamic shapes or a non-uint8 input.
    """
    from tvm import relax

    if gpu:
        raise ExportError("the TVM backend has no GPU kernel for QTernaryConv (int8); export the int8 model "
                          "for a CPU target, or export fp32 for the GPU")
    shape = x.ty.shape
    if x.ty.dtype != "uint8" or shape is None or not all(isinstance(d, int) or hasattr(d, "value")
                                                           for d in shape.values):
        raise ExportError(
            f"the TVM QTernaryConv kernel needs a uint8 input of static shape, got {x.ty}; "
            "export with a fixed input size"
        )
    geom = TernaryGeometry.of([int(d) for d in shape.values], int(weights.shape[0]), attrs)
    tables = encode_weights(weights, geom, chunks=1)
    x_zp = int(quant["x_zero_point"])
    pt, pl, pb, pr = attrs.pads
    if pt or pl or pb or pr:
        x = bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, pt, pb, pl, pr], pad_value=float(x_zp)))
    try:
        m, b = requantization_constants(quant["scale"], quant["bias"], quant["x_scale"], quant["y_scale"])
    except QuantizationError as err:
        raise ExportError(f"the TVM QTernaryConv kernel refuses this layer: {err}") from err
    func = qcpu_kernel(geom, attrs.activation, int(quant["y_zero_point"]), vector_floats, vector_registers)
    gvar = bb.add_func(func, "qternary_conv")
    consts = [relax.const(a) for a in (tables.idx, tables.ptr, tables.offsets, zero_point_sums(weights, x_zp), m, b)]
    out = relax.TensorType([geom.n, geom.cout, geom.oh, geom.ow], "uint8")
    return relax.call_tir(gvar, [x, *consts], out)
