"""ONNX side of TernaryConv: the registered schema (checker + shape inference) and a kernel
for `onnx.reference.ReferenceEvaluator`, both built from `lbdeploy.ops.ternary_conv`.

    from lbdeploy.ops.onnx_schema import register_schema, ReferenceTernaryConv
    register_schema()
    onnx.checker.check_model(model, full_check=True)
    ReferenceEvaluator(model, new_ops=[ReferenceTernaryConv]).run(None, feeds)
"""

from __future__ import annotations

import onnx
from onnx import defs, helper
from onnx.reference.op_run import OpRun

from lbdeploy.ops.ternary_conv import (
    DOMAIN,
    OP_TYPE,
    OP_VERSION,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    TernaryConvAttrs,
    ternary_conv_reference,
)

_DOC = "Convolution with fixed ternary {-1,0,+1} weights, fused per-channel affine and activation."


def optional_attribute(name: str, default, description: str):
    """An optional schema attribute with its default."""
    return defs.OpSchema.Attribute(name, helper.make_attribute(name, default), description)


def conv_shape_inference(cout_input: int):
    """A shape inference function for a conv op whose output has X's type and [N, Cout, OH, OW],
    Cout read from the 1-D input number `cout_input` (scale), OH/OW from the geometry attributes."""

    def infer(ctx) -> None:
        _infer_shape(ctx, cout_input)

    return infer


def _infer_shape(ctx, cout_input: int) -> None:
    x_type = ctx.get_input_type(0)
    if not x_type.tensor_type.HasField("shape"):
        return
    dims = x_type.tensor_type.shape.dim
    scale_type = ctx.get_input_type(cout_input)
    out = onnx.TypeProto()
    out.tensor_type.elem_type = x_type.tensor_type.elem_type
    shape = out.tensor_type.shape
    shape.dim.add().CopyFrom(dims[0])
    cout_dim = shape.dim.add()
    if scale_type.tensor_type.HasField("shape") and scale_type.tensor_type.shape.dim:
        cout_dim.CopyFrom(scale_type.tensor_type.shape.dim[0])
    attrs = attrs_from(ctx.get_attribute)
    for axis in (0, 1):
        src = dims[2 + axis]
        dst = shape.dim.add()
        if src.HasField("dim_value"):
            size = [1, 1]
            size[axis] = src.dim_value
            dst.dim_value = attrs.output_hw(size[0], size[1])[axis]
    ctx.set_output_type(0, out)


def attrs_from(get) -> TernaryConvAttrs:
    """TernaryConvAttrs from a getter of ONNX attributes by name (None when absent)."""

    def ints(name, default):
        attr = get(name)
        return tuple(attr.ints) if attr is not None and attr.ints else default

    def one(name, default, kind):
        attr = get(name)
        if attr is None:
            return default
        return attr.i if kind == "i" else attr.s.decode()

    return TernaryConvAttrs(
        kernel_shape=ints("kernel_shape", (3, 3)),
        strides=ints("strides", (1, 1)),
        pads=ints("pads", (0, 0, 0, 0)),
        dilations=ints("dilations", (1, 1)),
        group=one("group", 1, "i"),
        activation=one("activation", "none", "s"),
    )


def build_schema() -> defs.OpSchema:
    """The OpSchema of ai.lbdeploy::TernaryConv version 1."""
    P = defs.OpSchema.FormalParameter
    schema = defs.OpSchema(
        OP_TYPE,
        DOMAIN,
        OP_VERSION,
        _DOC,
        inputs=[
            P("X", "T", "input [N, C, H, W]"),
            P("W", "TW", "ternary weights: packed uint8 [Cout, ceil(K/4)] or int8 [Cout, C/group, kH, kW]"),
            P("scale", "T", "per-output-channel scale [Cout]"),
            P("bias", "T", "per-output-channel bias [Cout]"),
        ],
        outputs=[P("Y", "T", "output [N, Cout, OH, OW]")],
        type_constraints=[
            ("T", ["tensor(float)", "tensor(float16)"], "activations"),
            ("TW", ["tensor(uint8)", "tensor(int8)"], "packed or unpacked ternary weights"),
        ],
        attributes=[
            *geometry_attributes(),
            optional_attribute("activation", "none", "fused activation: none, relu or sigmoid"),
            optional_attribute("plugin_version", PLUGIN_VERSION, "TensorRT plugin version for the ONNX parser"),
            optional_attribute("plugin_namespace", PLUGIN_NAMESPACE, "TensorRT plugin namespace for the ONNX parser"),
        ],
    )
    schema.set_type_and_shape_inference_function(conv_shape_inference(2))
    return schema


def geometry_attributes() -> list:
    """Schema attributes shared by the conv ops: kernel_shape, strides, pads, dilations, group."""
    return [
        defs.OpSchema.Attribute("kernel_shape", defs.OpSchema.AttrType.INTS, "kernel height, width", required=True),
        optional_attribute("strides", [1, 1], "stride along H, W"),
        optional_attribute("pads", [0, 0, 0, 0], "padding top, left, bottom, right"),
        optional_attribute("dilations", [1, 1], "dilation along H, W"),
        optional_attribute("group", 1, "number of groups"),
    ]


def register_schema() -> None:
    """Register the TernaryConv schema with onnx (idempotent)."""
    try:
        defs.get_schema(OP_TYPE, OP_VERSION, DOMAIN)
        return
    except defs.SchemaError:
        pass
    defs.register_schema(build_schema())


def make_node(inputs, outputs, attrs: TernaryConvAttrs, name: str | None = None) -> onnx.NodeProto:
    """An ONNX TernaryConv node with every attribute written out."""
    return helper.make_node(OP_TYPE, inputs, outputs, name=name, domain=DOMAIN, **attrs.onnx_attributes())


class ReferenceTernaryConv(OpRun):
    """`onnx.reference` kernel: delegates to `ternary_conv_reference`."""

    op_domain = DOMAIN

    def _run(self, X, W, scale, bias, kernel_shape=None, strides=None, pads=None, dilations=None,
             group=None, activation=None, plugin_version=None, plugin_namespace=None):
        attrs = run_attrs(kernel_shape, strides, pads, dilations, group, activation)
        return (ternary_conv_reference(X, W, scale, bias, attrs),)


def run_attrs(kernel_shape, strides, pads, dilations, group, activation) -> TernaryConvAttrs:
    """TernaryConvAttrs from the keyword attributes `onnx.reference` hands an OpRun (None: default)."""
    return TernaryConvAttrs(
        kernel_shape=tuple(kernel_shape),
        strides=tuple(strides or (1, 1)),
        pads=tuple(pads or (0, 0, 0, 0)),
        dilations=tuple(dilations or (1, 1)),
        group=int(group or 1),
        activation=(activation.decode() if isinstance(activation, bytes) else activation) or "none",
    )


# The class name is the op type onnx.reference matches nodes against.
ReferenceTernaryConv.__name__ = OP_TYPE
