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
from lbdeploy.ops.qternary_conv import OP_TYPE, OP_VERSION, check_attrs, qternary_conv_reference
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
            P("X", "T", "input [N, C, H, W]"),
            P("x_scale", "tensor(float)", "scale of X, scalar"),
            P("x_zero_point", "T", "zero point of X, scalar (padding holds it)"),
            P("W", "tensor(uint8)", "packed ternary weights [Cout, ceil(K/4)] (TernaryConv's layout)"),
            P("scale", "tensor(float)", "real-domain per-output-channel multiplier of the sum [Cout]"),
            P("bias", "tensor(float)", "real-domain per-output-channel offset [Cout]"),
            P("y_scale", "tensor(float)", "scale of Y, scalar"),
            P("y_zero_point", "T", "zero point of Y, scalar"),
        ],
        outputs=[P("Y", "T", "output [N, Cout, OH, OW]")],
        type_constraints=[("T", ["tensor(uint8)"], "quantized activations")],
        attributes=[*geometry_attributes(), optional_attribute("activation", "none", "fused activation: none or relu")],
    )
    schema.set_type_and_shape_inference_function(conv_shape_inference(_SCALE_INPUT))
    return schema


def register_schema() -> None:
    """Register the QTernaryConv schema with onnx (idempotent)."""
    try:
        defs.get_schema(OP_TYPE, OP_VERSION, DOMAIN)
        return
    except defs.SchemaError:
        pass
    defs.register_schema(build_schema())


def make_node(inputs, outputs, attrs: TernaryConvAttrs, name: str | None = None) -> onnx.NodeProto:
    """An ONNX QTernaryConv node (inputs in `qternary_conv.INPUTS` order) with every attribute written out."""
    check_attrs(attrs)
    values = {key: value for key, value in attrs.onnx_attributes().items() if not key.startswith("plugin_")}
    return helper.make_node(OP_TYPE, inputs, outputs, name=name, domain=DOMAIN, **values)


class ReferenceQTernaryConv(OpRun):
    """`onnx.reference` kernel: delegates to `qternary_conv_reference`."""

    op_domain = DOMAIN

    def _run(self, X, x_scale, x_zero_point, W, scale, bias, y_scale, y_zero_point, kernel_shape=None,
             strides=None, pads=None, dilations=None, group=None, activation=None):
        attrs = run_attrs(kernel_shape, strides, pads, dilations, group, activation)
        return (qternary_conv_reference(X, x_scale, x_zero_point, W, scale, bias, y_scale, y_zero_point, attrs),)


# The class name is the op type onnx.reference matches nodes against.
ReferenceQTernaryConv.__name__ = OP_TYPE
