"""ONNX side of QTernaryConv: the registered schema (checker + shape inference) and a kernel for
`onnx.reference.ReferenceEvaluator`, built from `lbdeploy.ops.qternary_conv` and sharing the
geometry attributes and shape inference of TernaryConv's (`lbdeploy.ops.onnx_schema`).
Kept apart from `qternary_conv` so that a board can import the op's constants without onnx.

    from lbdeploy.ops.qonnx_schema import register_schema, ReferenceQTernaryConv, make_node
    register_schema()
    onnx.checker.check_model(model, full_check=True)
    ReferenceEvaluator(model, new_ops=[ReferenceQTernaryConv]).run(None, feeds)
"""

from __future__ import annotations

import onnx
from onnx import defs, helper
from onnx.reference.op_run import OpRun

from lbdeploy.ops.onnx_schema import conv_shape_inference, geometry_attributes, optional_attribute, run_attrs
from lbdeploy.ops.qternary_conv import OP_TYPE, OP_VERSION, check_attrs, check_layout, qternary_conv_reference
from lbdeploy.ops.ternary_conv import DOMAIN, TernaryConvAttrs

_DOC = ("TernaryConv on uint8 tensors: exact integer sums of W * (X - x_zero_point), per-channel float "
        "scale and bias, fused relu, requantized to y_scale / y_zero_point with round-half-to-even.")
_SCALE_INPUT = 4  # `scale` [Cout] gives the output's channel count


def build_schema() -> defs.OpSchema:
    """The OpSchema of ai.lbdeploy::QTernaryConv version 1."""
    P = defs.OpSchema.FormalParameter
    schema = defs.OpSchema(
        OP_TYPE,
        DOMAIN,
        OP_VERSION,
        _DOC,
        inputs=[
            P("X", "T", "input [N, C, H, W] (layout NHWC: [N, H, W, C])"),
            P("x_scale", "tensor(float)", "scale of X, scalar"),
            P("x_zero_point", "T", "zero point of X, scalar (padding holds it)"),
            P("W", "tensor(uint8)", "packed ternary weights [Cout, ceil(K/4)] (TernaryConv's layout)"),
            P("scale", "tensor(float)", "real-domain per-output-channel multiplier of the sum [Cout]"),
            P("bias", "tensor(float)", "real-domain per-output-channel offset [Cout]"),
            P("y_scale", "tensor(float)", "scale of Y, scalar"),
            P("y_zero_point", "T", "zero point of Y, scalar"),
        ],
        outputs=[P("Y", "T", "output [N, Cout, OH, OW] (layout NHWC: [N, OH, OW, Cout])")],
        type_constraints=[("T", ["tensor(uint8)"], "quantized activations")],
        attributes=[*geometry_attributes(), optional_attribute("activation", "none", "fused activation: none or relu"),
                    optional_attribute("layout", "NCHW", "memory order of X and Y: NCHW or NHWC")],
    )
    schema.set_type_and_shape_inference_function(_infer_shape)
    return schema


def _infer_shape(ctx) -> None:
    """TernaryConv's shape inference, in channels-last order for layout NHWC."""
    layout = ctx.get_attribute("layout")
    if layout is None or layout.s.decode() != "NHWC":
        conv_shape_inference(_SCALE_INPUT)(ctx)
        return
    x_type = ctx.get_input_type(0)
    if not x_type.tensor_type.HasField("shape"):
        return
    n, h, w, c = x_type.tensor_type.shape.dim
    as_nchw = onnx.TypeProto()
    as_nchw.tensor_type.elem_type = x_type.tensor_type.elem_type
    for dim in (n, c, h, w):
        as_nchw.tensor_type.shape.dim.add().CopyFrom(dim)
    inner = _PermutedContext(ctx, as_nchw)
    conv_shape_inference(_SCALE_INPUT)(inner)
    out = onnx.TypeProto()
    out.tensor_type.elem_type = x_type.tensor_type.elem_type
    dims = inner.output.tensor_type.shape.dim
    for axis in (0, 2, 3, 1):
        out.tensor_type.shape.dim.add().CopyFrom(dims[axis])
    ctx.set_output_type(0, out)


class _PermutedContext:
    """A shape-inference context that shows input 0 as NCHW and keeps the output it is given."""

    def __init__(self, ctx, x_type):
        self._ctx, self._x_type, self.output = ctx, x_type, None

    def get_input_type(self, index):
        return self._x_type if index == 0 else self._ctx.get_input_type(index)

    def get_attribute(self, name):
        return self._ctx.get_attribute(name)

    def set_output_type(self, index, value):
        self.output = value


def register_schema() -> None:
    """Register the QTernaryConv schema with onnx (idempotent)."""
    try:
        defs.get_schema(OP_TYPE, OP_VERSION, DOMAIN)
        return
    except defs.SchemaError:
        pass
    defs.register_schema(build_schema())


def make_node(inputs, outputs, attrs: TernaryConvAttrs, name: str | None = None, layout: str = "NCHW") -> onnx.NodeProto:
    """An ONNX QTernaryConv node (inputs in `qternary_conv.INPUTS` order) with every attribute written out
    (`layout` only when NHWC, so an NCHW node reads as every QTernaryConv written before)."""
    check_attrs(attrs)
    values = {key: value for key, value in attrs.onnx_attributes().items() if not key.startswith("plugin_")}
    if check_layout(layout) != "NCHW":
        values["layout"] = layout
    return helper.make_node(OP_TYPE, inputs, outputs, name=name, domain=DOMAIN, **values)


class ReferenceQTernaryConv(OpRun):
    """`onnx.reference` kernel: delegates to `qternary_conv_reference`."""

    op_domain = DOMAIN

    def _run(self, X, x_scale, x_zero_point, W, scale, bias, y_scale, y_zero_point, kernel_shape=None,
             strides=None, pads=None, dilations=None, group=None, activation=None, layout=None):
        attrs = run_attrs(kernel_shape, strides, pads, dilations, group, activation)
        layout = (layout.decode() if isinstance(layout, bytes) else layout) or "NCHW"
        return (qternary_conv_reference(X, x_scale, x_zero_point, W, scale, bias, y_scale, y_zero_point, attrs,
                                        layout),)


# The class name is the op type onnx.reference matches nodes against.
ReferenceQTernaryConv.__name__ = OP_TYPE
