"""The `ai.lbdeploy::TernaryConv` operator, specified once for every backend.

This module is the single source of truth for the op (see docs/ops/TernaryConv.md):
its name, domain and version; the 2-bit weight packing; the attribute defaults; a numpy
reference implementation that every backend's kernel is tested against; the ONNX schema
(so `onnx.checker` full check and shape inference pass); and an `onnx.reference` kernel.

    Y = activation(scale[o] * sum_{c,i,j} W[o,c,i,j] * X[n, g*Cin_g + c, h*s + i*d - p, ...] + bias[o])

with W in {-1, 0, +1}. Backends (ONNX Runtime, TVM, TensorRT) implement exactly this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lbdeploy.errors import TernaryWeightError

DOMAIN = "ai.lbdeploy"
OP_TYPE = "TernaryConv"
OP_VERSION = 1
ACTIVATIONS = ("none", "relu", "sigmoid")
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""

# 2-bit codes of the packed layout; code 3 is invalid.
CODE_ZERO, CODE_PLUS, CODE_MINUS = 0, 1, 2
WEIGHTS_PER_BYTE = 4

# Reference vs. an optimized float32 kernel: the kernel sums up to K = Cin/group*kH*kW terms
# in another order than the float64 reference, so allow a few float32 ulps of the sum's magnitude.
KERNEL_TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


@dataclass(frozen=True)
class TernaryConvAttrs:
    """The op's attributes with their defaults (ONNX `Conv` conventions for the geometry)."""

    kernel_shape: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilations: tuple[int, int] = (1, 1)
    group: int = 1
    activation: str = "none"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise TernaryWeightError(
                f"TernaryConv activation must be one of {ACTIVATIONS}, got {self.activation!r}"
            )
        if self.group < 1:
            raise TernaryWeightError(f"TernaryConv group must be >= 1, got {self.group}")

    def onnx_attributes(self) -> dict:
        """Attributes as written on the ONNX node (TensorRT plugin fields included)."""
        return {
            "kernel_shape": list(self.kernel_shape),
            "strides": list(self.strides),
            "pads": list(self.pads),
            "dilations": list(self.dilations),
            "group": int(self.group),
            "activation": self.activation,
            "plugin_version": PLUGIN_VERSION,
            "plugin_namespace": PLUGIN_NAMESPACE,
        }

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        """Output height and width for an input of h x w."""
        kh, kw = self.kernel_shape
        oh = (h + self.pads[0] + self.pads[2] - self.dilations[0] * (kh - 1) - 1) // self.strides[0] + 1
        ow = (w + self.pads[1] + self.pads[3] - self.dilations[1] * (kw - 1) - 1) // self.strides[1] + 1
        return oh, ow


def check_ternary(weights: np.ndarray, what: str = "weights") -> np.ndarray:
    """Return `weights` as int8, raising TernaryWeightError if any value is not -1, 0 or +1."""
    array = np.asarray(weights)
    bad = ~np.isin(array, (-1, 0, 1))
    if bad.any():
        sample = np.unique(array[bad])[:5].tolist()
        raise TernaryWeightError(
            f"{what} must hold only -1, 0 and +1; found {int(bad.sum())} other values such as {sample}"
        )
    return array.astype(np.int8)


def packed_row_bytes(weights_per_filter: int) -> int:
    """Bytes of one output channel's packed row: ceil(K / 4)."""
    return -(-weights_per_filter // WEIGHTS_PER_BYTE)


def pack_ternary(weights: np.ndarray) -> np.ndarray:
    """Pack int8 ternary weights [Cout, Cin/g, kH, kW] into uint8 [Cout, ceil(K/4)].

    Weight j of output channel o (row-major over (c, i, j)) sits in byte j // 4 at bits
    2*(j % 4) .. 2*(j % 4)+1 with codes 0 -> 0, 1 -> +1, 2 -> -1; padding codes are 0.
    """
    w = check_ternary(weights)
    cout = w.shape[0]
    flat = w.reshape(cout, -1)
    k = flat.shape[1]
    codes = np.where(flat == 1, CODE_PLUS, np.where(flat == -1, CODE_MINUS, CODE_ZERO)).astype(np.uint8)
    padded = np.zeros((cout, packed_row_bytes(k) * WEIGHTS_PER_BYTE), dtype=np.uint8)
    padded[:, :k] = codes
    quads = padded.reshape(cout, -1, WEIGHTS_PER_BYTE)
    shifts = (2 * np.arange(WEIGHTS_PER_BYTE)).astype(np.uint8)
    return np.bitwise_or.reduce(quads << shifts, axis=2).astype(np.uint8)


def check_packed(packed: np.ndarray, shape: tuple[int, int, int, int] | None = None,
                 what: str = "packed TernaryConv weights") -> np.ndarray:
    """Validate 2-bit packed weights; the one check every loader of packed weights uses.

    Every 2-bit code of every row must be 0, 1 or 2, including the padding codes past K in the
    row's last byte (pack_ternary writes 0 there): a row with code 3 anywhere is corrupt, so the
    check needs no shape.

    Args:
        packed: uint8 [Cout, ceil(K/4)], K = Cin/group * kH * kW.
        shape: the filters' shape (Cout, Cin/group, kH, kW), to check the packed shape too (optional).
        what: names the weights in the error (e.g. the ONNX initializer).
    Returns:
        `packed` as a uint8 array.
    Raises:
        TernaryWeightError: wrong dtype or shape, or code 3 somewhere (the first row and position said).
    """
    array = np.asarray(packed)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise TernaryWeightError(f"{what} must be 2-D uint8 (2-bit packed), got {array.dtype} {array.shape}")
    k = int(np.prod(shape[1:])) if shape is not None else None
    if shape is not None and array.shape != (shape[0], packed_row_bytes(k)):
        raise TernaryWeightError(
            f"{what} must have shape {(shape[0], packed_row_bytes(k))} for filters {tuple(shape)}, got {array.shape}"
        )
    shifts = (2 * np.arange(WEIGHTS_PER_BYTE)).astype(np.uint8)
    invalid = ((array[:, :, None] >> shifts) & 3).reshape(array.shape[0], -1) == 3
    if invalid.any():
        row, position = (int(v) for v in np.argwhere(invalid)[0])
        where = f"padding code {position} past K = {k}" if k is not None and position >= k else f"code {position}"
        raise TernaryWeightError(f"{what} contain the invalid 2-bit code 3 (row {row}, {where}); the weights are "
                                 "corrupt: re-export the model")
    return array


def unpack_ternary(packed: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Inverse of `pack_ternary`: uint8 [Cout, ceil(K/4)] -> int8 weights of `shape` (checked by `check_packed`)."""
    packed = check_packed(packed, shape)
    cout = shape[0]
    k = int(np.prod(shape[1:]))
    shifts = (2 * np.arange(WEIGHTS_PER_BYTE)).astype(np.uint8)
    codes = ((packed[:, :, None] >> shifts) & 3).reshape(cout, -1)[:, :k]
    values = np.where(codes == CODE_PLUS, 1, np.where(codes == CODE_MINUS, -1, 0)).astype(np.int8)
    return values.reshape(shape)


def weights_from_input(w: np.ndarray, x_channels: int, attrs: TernaryConvAttrs, cout: int | None = None):
    """Decode the op's W input (packed uint8 or unpacked int8) into int8 [Cout, Cin/g, kH, kW]."""
    w = np.asarray(w)
    if w.dtype == np.uint8:
        cout = w.shape[0] if cout is None else cout
        shape = (cout, x_channels // attrs.group, *attrs.kernel_shape)
        return unpack_ternary(w, shape)
    return check_ternary(w)


def activate(y: np.ndarray, activation: str) -> np.ndarray:
    """Apply the op's fused activation; NaN stays NaN (IEEE: relu(NaN) = sigmoid(NaN) = NaN)."""
    if activation == "relu":
        return np.maximum(y, 0)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-y))
    return y


def _signed_sum(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """sum_k w[o, k] * x[n, k, p] over the non-zero taps only ("zero taps read nothing").

    A tap with w = 0 contributes nothing even where x is NaN or inf (a dense product would give
    0 * NaN = NaN); the non-zero taps add or subtract x with IEEE semantics: any NaN read gives
    NaN, +inf and -inf read together give NaN, otherwise an inf read gives that inf.
    """
    finite = np.isfinite(x)
    total = np.einsum("ok,nkp->nop", w, np.where(finite, x, 0.0))
    if finite.all():
        return total
    reads = (w != 0).astype(np.float64)
    plus, minus = (w > 0).astype(np.float64), (w < 0).astype(np.float64)
    nan = np.einsum("ok,nkp->nop", reads, np.isnan(x).astype(np.float64)) > 0
    pos_inf, neg_inf = (x == np.inf).astype(np.float64), (x == -np.inf).astype(np.float64)
    up = np.einsum("ok,nkp->nop", plus, pos_inf) + np.einsum("ok,nkp->nop", minus, neg_inf) > 0
    down = np.einsum("ok,nkp->nop", plus, neg_inf) + np.einsum("ok,nkp->nop", minus, pos_inf) > 0
    total = np.where(up, np.inf, total)
    total = np.where(down, -np.inf, total)
    return np.where(nan | (up & down), np.nan, total)


def ternary_conv_reference(
    x: np.ndarray,
    w: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    attrs: TernaryConvAttrs,
) -> np.ndarray:
    """Reference TernaryConv in float64 (im2col); returns x's dtype.

    Args:
        x: input [N, C, H, W], float32 or float16.
        w: ternary weights, int8 [Cout, C/group, kH, kW] or packed uint8 [Cout, ceil(K/4)].
        scale, bias: per-output-channel affine applied after the sum, [Cout].
        attrs: geometry and activation.
    Returns:
        Y [N, Cout, OH, OW].
    Raises:
        TernaryWeightError: weights not ternary or shapes inconsistent.
    """
    x = np.asarray(x)
    n, c, h, wd = x.shape
    weights = weights_from_input(w, c, attrs, cout=len(scale)).astype(np.float64)
    cout, cin_g, kh, kw = weights.shape
    g = attrs.group
    if c != cin_g * g or cout % g:
        raise TernaryWeightError(
            f"TernaryConv shapes do not agree: input has {c} channels, filters {weights.shape}, group {g}"
        )
    if (kh, kw) != tuple(attrs.kernel_shape):
        raise TernaryWeightError(f"filters are {kh}x{kw} but kernel_shape is {attrs.kernel_shape}")
    oh, ow = attrs.output_hw(h, wd)
    (sh, sw), (dh, dw) = attrs.strides, attrs.dilations
    pt, pl, pb, pr = attrs.pads
    xp = np.zeros((n, c, h + pt + pb, wd + pl + pr), dtype=np.float64)
    xp[:, :, pt : pt + h, pl : pl + wd] = x
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
    out = np.empty((n, cout, oh, ow), dtype=np.float64)
    cout_g = cout // g
    for gi in range(g):
        xg = cols[:, gi * cin_g : (gi + 1) * cin_g].reshape(n, cin_g * kh * kw, oh * ow)
        wg = weights[gi * cout_g : (gi + 1) * cout_g].reshape(cout_g, -1)
        out[:, gi * cout_g : (gi + 1) * cout_g] = _signed_sum(wg, xg).reshape(n, cout_g, oh, ow)
    y = out * np.asarray(scale, np.float64)[None, :, None, None] + np.asarray(bias, np.float64)[None, :, None, None]
    return activate(y, attrs.activation).astype(x.dtype)
