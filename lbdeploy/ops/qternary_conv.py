"""The `ai.lbdeploy::QTernaryConv` operator (version 1): TernaryConv on uint8 tensors.

Single source of truth for the quantized op (docs/ops/QTernaryConv.md): its name and version, its
inputs, the kernels' limits, the one specified rounding of the requantization and the numpy
reference implementation (exact int64 sums; float32 requantization with one rounding of the
multiply-add, bit-exact to every kernel). The ONNX schema and the
`onnx.reference` kernel are in `lbdeploy.ops.onnx_schema`; the shared test vectors in
`lbdeploy.ops.qvectors`. The domain, the packed weight layout and the attributes are
TernaryConv's (`lbdeploy.ops.ternary_conv`), with the activation limited to none / relu.

    acc[n,o,y,x] = sum_{c,i,j} W[o,c,i,j] * (Xpad[...] - x_zero_point)      (Xpad padded with x_zero_point)
    m[o] = fl32(fl32(scale[o] * x_scale) / y_scale) ;  b[o] = fl32(bias[o] / y_scale)
    v = fl32(m[o] * acc + b[o])  (one rounding: a fused multiply-add) ;  v = max(v, 0) for relu
    Y = saturate_uint8(round_half_to_even(v) + y_zero_point)

fl32 rounds to the nearest float32, ties to even. x_scale and y_scale must be finite and positive,
every scale and bias finite, and so every m and b (else the op fails: INVALID_ARGUMENT).
"""

from __future__ import annotations

import numpy as np

from lbdeploy.errors import QuantizationError, TernaryWeightError
from lbdeploy.ops.ternary_conv import TernaryConvAttrs, ternary_conv_reference

OP_TYPE = "QTernaryConv"
OP_VERSION = 1
ACTIVATIONS = ("none", "relu")
INPUTS = ("X", "x_scale", "x_zero_point", "W", "scale", "bias", "y_scale", "y_zero_point")
# Memory order of X and Y (attribute `layout`): NCHW (the default, the only form before), or NHWC,
# the channels-last form that ONNX Runtime's channels-last int8 convs and MaxPool feed and read.
LAYOUTS = ("NCHW", "NHWC")

# Kernel limits: K = C/group * kH * kW <= MAX_K keeps |acc| <= 65536 * 255 < 2^24, so acc is exact in
# int32 and in the float32 of the requantization; the integer kernels sum the taps of one
# step in 16-bit lanes, at most MAX_KERNEL_TAPS = 128 taps of 255 (32640 < 2^15), so one input
# channel's kH * kW taps must fit in a step.
MAX_K = 65536
MAX_KERNEL_TAPS = 128

# Every kernel follows the one specified rounding, so every backend equals the reference exactly.
QKERNEL_TOLERANCE = 0


def check_attrs(attrs: TernaryConvAttrs) -> TernaryConvAttrs:
    """Return `attrs` if they are valid for QTernaryConv (TernaryConv's, activation none or relu).

    Raises:
        TernaryWeightError: sigmoid (or another activation) was asked for.
    """
    if attrs.activation not in ACTIVATIONS:
        raise TernaryWeightError(
            f"QTernaryConv activation must be one of {ACTIVATIONS}, got {attrs.activation!r}; "
            "keep a sigmoid layer as float TernaryConv"
        )
    return attrs


def _uint8_scalar(value, name: str) -> int:
    array = np.asarray(value)
    if array.dtype != np.uint8 or array.size != 1:
        raise TernaryWeightError(f"QTernaryConv {name} must be one uint8 value, got {array.dtype} of shape {array.shape}")
    return int(array.reshape(()))


def accumulate(x: np.ndarray, x_zero_point, w: np.ndarray, attrs: TernaryConvAttrs) -> np.ndarray:
    """The exact sums acc = sum W * (Xpad - x_zero_point) as int64 [N, Cout, OH, OW].

    Args:
        x: uint8 input [N, C, H, W].
        x_zero_point: uint8 scalar; padding holds this value (real 0).
        w: ternary weights, packed uint8 [Cout, ceil(K/4)] (Cout from its rows) or int8 [Cout, C/g, kH, kW].
        attrs: geometry (the activation is ignored here).
    Raises:
        TernaryWeightError: X is not uint8, bad weights or shapes.
    """
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise TernaryWeightError(f"QTernaryConv X must be uint8, got {x.dtype}")
    centered = x.astype(np.float64) - _uint8_scalar(x_zero_point, "x_zero_point")
    cout = np.asarray(w).shape[0]
    plain = TernaryConvAttrs(attrs.kernel_shape, attrs.strides, attrs.pads, attrs.dilations, attrs.group)
    # Every partial sum is an integer below 2^53 in magnitude, so float64 adds them exactly.
    sums = ternary_conv_reference(centered, w, np.ones(cout), np.zeros(cout), plain)
    return np.rint(sums).astype(np.int64)


def requantization_constants(scale, bias, x_scale, y_scale) -> tuple[np.ndarray, np.ndarray]:
    """The float32 m[o] = fl32(fl32(scale[o] * x_scale) / y_scale) and b[o] = fl32(bias[o] / y_scale).

    Raises:
        QuantizationError: x_scale or y_scale is not finite and positive, or a scale, bias, m or b
            is not finite (the op's degenerate inputs: no backend runs them).
    """
    x_scale, y_scale = np.float32(x_scale), np.float32(y_scale)
    if not (np.isfinite(x_scale) and x_scale > 0 and np.isfinite(y_scale) and y_scale > 0):
        raise QuantizationError(f"QTernaryConv x_scale and y_scale must be finite and positive, got {x_scale} and {y_scale}")
    scale, bias = np.asarray(scale, np.float32), np.asarray(bias, np.float32)
    with np.errstate(over="ignore"):
        m = (scale * x_scale) / y_scale
        b = bias / y_scale
    if not (np.isfinite(m).all() and np.isfinite(b).all()):
        raise QuantizationError("QTernaryConv scale and bias must be finite, and so must scale * x_scale / y_scale and "
                                "bias / y_scale in float32")
    return m.astype(np.float32), b.astype(np.float32)


def fused_multiply_add32(m: np.ndarray, acc: np.ndarray, b: np.ndarray) -> np.ndarray:
    """fl32(m * acc + b) with one rounding (IEEE fusedMultiplyAdd in float32), elementwise.

    m, b float32 and integer acc with |acc| < 2^24 (MAX_K guarantees it): m * acc is exact in float64;
    the float64 sum s = p + b carries a rounding error e (TwoSum). Rounding s to float32 is the
    correctly rounded result unless s lies exactly halfway between two float32 values and e != 0;
    there the exact value lies on e's side of the midpoint.
    """
    p = m.astype(np.float64) * acc.astype(np.float64)
    b64 = b.astype(np.float64)
    s = p + b64
    bb = s - p
    e = (p - (s - bb)) + (b64 - bb)
    with np.errstate(over="ignore"):
        f = s.astype(np.float32)
        toward = np.nextafter(f, np.where(s > f, np.float32(np.inf), np.float32(-np.inf)).astype(np.float32))
    midpoint = (e != 0) & (s != f) & np.isfinite(f) & (s == (f.astype(np.float64) + toward.astype(np.float64)) / 2)
    # At a midpoint the exact value is above s for e > 0: take the upper neighbour, else the lower one.
    upper, lower = np.maximum(f, toward), np.minimum(f, toward)
    return np.where(midpoint, np.where(e > 0, upper, lower), f).astype(np.float32)


def requantize(acc: np.ndarray, x_scale, scale, bias, y_scale, y_zero_point, activation: str) -> np.ndarray:
    """uint8 Y from the int sums acc [N, Cout, OH, OW] per the contract (bit-exact to the kernels).

    Raises:
        QuantizationError: degenerate scales (see `requantization_constants`).
    """
    y_zp = _uint8_scalar(y_zero_point, "y_zero_point")
    m, b = requantization_constants(scale, bias, x_scale, y_scale)
    v = fused_multiply_add32(m[None, :, None, None], np.asarray(acc), b[None, :, None, None])
    if activation == "relu":
        v = np.maximum(v, np.float32(0))  # real value y_scale * v >= 0, i.e. Y >= y_zero_point
    return np.clip(np.rint(v.astype(np.float64)) + y_zp, 0, 255).astype(np.uint8)


def check_layout(layout: str) -> str:
    """Return `layout` if it is one of LAYOUTS.

    Raises:
        TernaryWeightError: another layout.
    """
    if layout not in LAYOUTS:
        raise TernaryWeightError(f"QTernaryConv layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def qternary_conv_reference(x, x_scale, x_zero_point, w, scale, bias, y_scale, y_zero_point,
                            attrs: TernaryConvAttrs, layout: str = "NCHW") -> np.ndarray:
    """Reference QTernaryConv: exact int64 sums, the specified float32 requantization; returns uint8 Y.

    Args:
        x: uint8 [N, C, H, W]; x_scale: float32 scalar; x_zero_point: uint8 scalar.
        w: packed uint8 [Cout, ceil(K/4)] or int8 [Cout, C/group, kH, kW] ternary weights.
        scale, bias: float32 [Cout], the real-domain affine of the sum (TernaryConv's).
        y_scale: float32 scalar; y_zero_point: uint8 scalar.
        attrs: geometry and activation (none or relu).
        layout: "NCHW", or "NHWC" for X [N, H, W, C] and Y [N, OH, OW, Cout].
    Returns:
        uint8 Y [N, Cout, OH, OW] (or [N, OH, OW, Cout]).
    Raises:
        TernaryWeightError: bad dtypes, weights, shapes or activation; QuantizationError: degenerate scales.
    """
    check_attrs(attrs)
    if check_layout(layout) == "NHWC":
        y = qternary_conv_reference(np.asarray(x).transpose(0, 3, 1, 2), x_scale, x_zero_point, w, scale, bias,
                                    y_scale, y_zero_point, attrs)
        return np.ascontiguousarray(y.transpose(0, 2, 3, 1))
    if len(np.asarray(scale)) != np.asarray(w).shape[0] or len(np.asarray(bias)) != np.asarray(w).shape[0]:
        raise TernaryWeightError("QTernaryConv scale and bias must have one value per output channel")
    acc = accumulate(x, x_zero_point, w, attrs)
    return requantize(acc, x_scale, scale, bias, y_scale, y_zero_point, attrs.activation)
