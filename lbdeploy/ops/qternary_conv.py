"""The `ai.lbdeploy::QTernaryConv` operator (version 1): TernaryConv on uint8 tensors.

Single source of truth for the quantized op (docs/ops/QTernaryConv.md): its name and version, its
inputs, the kernels' limits, the tolerance between a kernel and the reference, and the numpy
reference implementation (exact int64 sums, float64 requantization). The ONNX schema and the
`onnx.reference` kernel are in `lbdeploy.ops.onnx_schema`; the shared test vectors in
`lbdeploy.ops.qvectors`. The domain, the packed weight layout and the attributes are
TernaryConv's (`lbdeploy.ops.ternary_conv`), with the activation limited to none / relu.

    acc[n,o,y,x] = sum_{c,i,j} W[o,c,i,j] * (Xpad[...] - x_zero_point)      (Xpad padded with x_zero_point)
    v = scale[o] * x_scale / y_scale * acc + bias[o] / y_scale ;  v = max(v, 0) for relu (real-domain relu)
    Y = saturate_uint8(round_half_to_even(v) + y_zero_point)
"""

from __future__ import annotations

import numpy as np

from lbdeploy.errors import TernaryWeightError
from lbdeploy.ops.ternary_conv import TernaryConvAttrs, ternary_conv_reference

OP_TYPE = "QTernaryConv"
OP_VERSION = 1
ACTIVATIONS = ("none", "relu")
INPUTS = ("X", "x_scale", "x_zero_point", "W", "scale", "bias", "y_scale", "y_zero_point")

# Kernel limits: K = C/group * kH * kW <= MAX_K keeps |acc| <= 65536 * 255 < 2^24, so acc is exact in
# int32 and in the float32 of the requantization; the integer kernels sum the taps of one
# step in 16-bit lanes, at most MAX_KERNEL_TAPS = 128 taps of 255 (32640 < 2^15), so one input
# channel's kH * kW taps must fit in a step.
MAX_K = 65536
MAX_KERNEL_TAPS = 128

# A kernel requantizes in float32, possibly in another order than the float64 reference, which can
# flip a tie of round-half-to-even: outputs may differ from the reference by one step of y_scale.
QKERNEL_TOLERANCE = 1


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


def requantize(acc: np.ndarray, x_scale, scale, bias, y_scale, y_zero_point, activation: str) -> np.ndarray:
    """uint8 Y from the int sums acc [N, Cout, OH, OW] per the contract (float64 arithmetic)."""
    x_scale = float(np.float32(x_scale))
    y_scale = float(np.float32(y_scale))
    y_zp = _uint8_scalar(y_zero_point, "y_zero_point")
    scale = np.asarray(scale, np.float32).astype(np.float64)
    bias = np.asarray(bias, np.float32).astype(np.float64)
    m = (scale * x_scale / y_scale)[None, :, None, None]
    b = (bias / y_scale)[None, :, None, None]
    v = m * acc + b
    if activation == "relu":
        v = np.maximum(v, 0.0)  # real value y_scale * v >= 0, i.e. Y >= y_zero_point
    return np.clip(np.rint(v) + y_zp, 0, 255).astype(np.uint8)


def qternary_conv_reference(x, x_scale, x_zero_point, w, scale, bias, y_scale, y_zero_point,
                            attrs: TernaryConvAttrs) -> np.ndarray:
    """Reference QTernaryConv: exact int64 sums, float64 requantization; returns uint8 Y.

    Args:
        x: uint8 [N, C, H, W]; x_scale: float32 scalar; x_zero_point: uint8 scalar.
        w: packed uint8 [Cout, ceil(K/4)] or int8 [Cout, C/group, kH, kW] ternary weights.
        scale, bias: float32 [Cout], the real-domain affine of the sum (TernaryConv's).
        y_scale: float32 scalar; y_zero_point: uint8 scalar.
        attrs: geometry and activation (none or relu).
    Returns:
        uint8 Y [N, Cout, OH, OW].
    Raises:
        TernaryWeightError: bad dtypes, weights, shapes or activation.
    """
    check_attrs(attrs)
    if len(np.asarray(scale)) != np.asarray(w).shape[0] or len(np.asarray(bias)) != np.asarray(w).shape[0]:
        raise TernaryWeightError("QTernaryConv scale and bias must have one value per output channel")
    acc = accumulate(x, x_zero_point, w, attrs)
    return requantize(acc, x_scale, scale, bias, y_scale, y_zero_point, attrs.activation)
