"""ONNX -> Relax import that understands `ai.lbdeploy::TernaryConv`.

TVM's Relax ONNX frontend has no custom-op hook and ignores node domains, so
`LbdeployOnnxImporter` extends its graph importer (no global patching):

* `_check_for_unsupported_ops` checks every node by (domain, op_type) first and raises one
  `ExportError` listing ALL unsupported ops, instead of failing on the first;
* while nodes are converted, the importer knows each node's domain, and a node
  `ai.lbdeploy::TernaryConv` (version 1) becomes our add/sub kernel (ternary_kernel.py),
  `ai.lbdeploy::QTernaryConv` (version 1, uint8) our integer kernel (qternary_kernel.py); both
  parse their attributes with `_ternary_attrs`. QuantizeLinear / DequantizeLinear (int8 QDQ
  graphs) are TVM's own converters;
* an inference BatchNormalization (constant statistics) becomes x * a + b with a, b folded in
  numpy (TVM's constant folding of the same took most of the compile time);
  every other node goes to TVM's own converter.

To support another custom op, add its (domain, op_type): version to `CUSTOM_OPS` and a
converter to `_CONVERTERS`.
"""

from __future__ import annotations

import numpy as np

from lbdeploy.errors import ExportError, LbdeployError
from lbdeploy.ops import qternary_conv
from lbdeploy.ops.ternary_conv import DOMAIN, OP_TYPE, OP_VERSION, TernaryConvAttrs, weights_from_input

ONNX_DOMAINS = ("", "ai.onnx")
CUSTOM_OPS = {(DOMAIN, OP_TYPE): OP_VERSION, (DOMAIN, qternary_conv.OP_TYPE): qternary_conv.OP_VERSION}


def _importer_class():
    """Build the importer subclass (deferred so that importing this module needs no TVM)."""
    from tvm.relax.frontend.onnx import onnx_frontend

    class LbdeployOnnxImporter(onnx_frontend.ONNXGraphImporter):
        """TVM's ONNX graph importer plus lbdeploy's custom ops (see the module docstring)."""

        def __init__(self, shape_dict, gpu: bool, vector_floats: int, vector_registers: int,
                     custom_versions: dict):
            super().__init__(shape_dict, "float32", keep_params_in_input=False, sanitize=True)
            self._gpu = gpu
            self._vector_floats = vector_floats
            self._vector_registers = vector_registers
            self._custom_versions = custom_versions
            self._domain = ""

        def _check_for_unsupported_ops(self, graph):
            supported = set(onnx_frontend._get_convert_map()) | {"If", "Constant"}
            unsupported = set()
            for node in graph.node:
                key = (node.domain, node.op_type)
                if key in CUSTOM_OPS:
                    if self._custom_versions.get(node.domain) != CUSTOM_OPS[key]:
                        unsupported.add(f"{node.domain}::{node.op_type} (opset "
                                        f"{self._custom_versions.get(node.domain)}, need {CUSTOM_OPS[key]})")
                elif node.domain not in ONNX_DOMAINS or node.op_type not in supported:
                    unsupported.add(f"{node.domain or 'ai.onnx'}::{node.op_type}")
            if unsupported:
                raise ExportError(
                    "the TVM backend cannot import these ONNX ops: " + ", ".join(sorted(unsupported))
                    + "; export with --backend ort or change the model"
                )

        def _construct_nodes(self, graph):
            super()._construct_nodes(_DomainTrackingGraph(graph, self))

        def _convert_operator(self, op_name, inputs, attrs, opset):
            if (self._domain, op_name) in CUSTOM_OPS:
                return self.bb.normalize(_CONVERTERS[op_name](self, inputs, attrs))
            if op_name == "BatchNormalization" and _is_inference_batch_norm(inputs, attrs):
                return self.bb.normalize(_folded_batch_norm(inputs, attrs))
            return super()._convert_operator(op_name, inputs, attrs, opset)

    return LbdeployOnnxImporter


def _constant(value, op: str, name: str, input_name: str) -> np.ndarray:
    """The numpy value of a constant node input.

    Raises:
        ExportError: the input is computed in the graph, not an initializer.
    """
    import tvm

    if not isinstance(value, tvm.ir.GenericConst):
        raise ExportError(f"{op} {name!r}: {input_name} must be an initializer (a constant)")
    return value.value.numpy()


def _ternary_weights(op: str, x, w, cout_from, attrs: dict):
    """Parsed attributes and int8 filters of a TernaryConv or QTernaryConv node."""
    op_attrs = _ternary_attrs(attrs)
    packed = _constant(w, op, attrs["tvm_custom"]["name"], "W")
    weights = weights_from_input(packed, int(x.ty.shape.values[1]), op_attrs, cout=int(cout_from.ty.shape.values[0]))
    return op_attrs, weights


def _convert_ternary_conv(importer, inputs, attrs):
    """ai.lbdeploy::TernaryConv -> our float kernel."""
    from lbdeploy.exporters.tvm.ternary_kernel import emit_ternary_conv

    x, w, scale, bias = inputs
    op_attrs, weights = _ternary_weights(OP_TYPE, x, w, scale, attrs)
    return emit_ternary_conv(importer.bb, x, weights, scale, bias, op_attrs, importer._gpu,
                             importer._vector_floats, importer._vector_registers)


def _convert_qternary_conv(importer, inputs, attrs):
    """ai.lbdeploy::QTernaryConv -> our integer kernel (every input but X a constant); the NHWC form
    runs as the NCHW kernel between two layout transposes."""
    from tvm import relax

    from lbdeploy.exporters.tvm.qternary_kernel import emit_qternary_conv

    op, name = qternary_conv.OP_TYPE, attrs["tvm_custom"]["name"]
    named = dict(zip(qternary_conv.INPUTS, inputs))
    layout = attrs.get("layout", b"NCHW")
    layout = layout.decode() if isinstance(layout, bytes) else layout
    try:
        channels_last = qternary_conv.check_layout(layout) == "NHWC"
    except LbdeployError as err:
        raise ExportError(f"{op} {name!r}: {err}") from err
    if channels_last:
        named["X"] = importer.bb.emit(relax.op.permute_dims(named["X"], [0, 3, 1, 2]))
    op_attrs, weights = _ternary_weights(op, named["X"], named["W"], named["scale"], attrs)
    try:
        qternary_conv.check_attrs(op_attrs)
    except LbdeployError as err:
        raise ExportError(f"{op} {name!r}: {err}") from err
    quant = {key: _constant(named[key], op, name, key) for key in qternary_conv.INPUTS if key not in ("X", "W")}
    y = emit_qternary_conv(importer.bb, named["X"], weights, quant, op_attrs, importer._gpu,
                           importer._vector_floats, importer._vector_registers)
    return relax.op.permute_dims(importer.bb.emit(y), [0, 2, 3, 1]) if channels_last else y


_CONVERTERS = {OP_TYPE: _convert_ternary_conv, qternary_conv.OP_TYPE: _convert_qternary_conv}


class _DomainTrackingGraph:
    """A view of an ONNX graph whose node iteration tells the importer each node's domain."""

    def __init__(self, graph, importer):
        self._graph = graph
        self._importer = importer

    @property
    def node(self):
        for node in self._graph.node:
            self._importer._domain = node.domain
            yield node

    def __getattr__(self, name):
        return getattr(self._graph, name)


def _is_inference_batch_norm(inputs, attrs) -> bool:
    import tvm

    return not attrs.get("training_mode", 0) and all(isinstance(v, tvm.ir.GenericConst) for v in inputs[1:5])


def _folded_batch_norm(inputs, attrs):
    """BatchNormalization with constant statistics as x * a + b, a and b computed here in numpy.

    (TVM would otherwise build and run a small kernel per BatchNorm to fold the same constants,
    which dominated compile time.)
    """
    from tvm import relax

    x = inputs[0]
    gamma, beta, mean, var = (np.asarray(v.value.numpy(), np.float64) for v in inputs[1:5])
    a = gamma / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    b = beta - mean * a
    shape = (1, -1) + (1,) * (len(x.ty.shape.values) - 2)
    a = relax.const(a.reshape(shape).astype(np.float32))
    b = relax.const(b.reshape(shape).astype(np.float32))
    return relax.op.add(relax.op.multiply(x, a), b)


def _ternary_attrs(attrs: dict) -> TernaryConvAttrs:
    """TernaryConvAttrs from the importer's parsed attribute dict."""
    activation = attrs.get("activation", b"none")
    return TernaryConvAttrs(
        kernel_shape=tuple(attrs["kernel_shape"]),
        strides=tuple(attrs.get("strides", (1, 1))),
        pads=tuple(attrs.get("pads", (0, 0, 0, 0))),
        dilations=tuple(attrs.get("dilations", (1, 1))),
        group=int(attrs.get("group", 1)),
        activation=activation.decode() if isinstance(activation, bytes) else activation,
    )


def _opsets(model) -> dict:
    return {opset.domain: opset.version for opset in model.opset_import}


def import_onnx(model, shape_dict: dict | None = None, gpu: bool = False, vector_floats: int = 4,
                vector_registers: int = 32):
    """Convert an ONNX ModelProto (with TernaryConv nodes) into a Relax IRModule.

    Args:
        model: the onnx.ModelProto (static input shapes, or give `shape_dict`).
        shape_dict: optional input name -> shape overrides.
        gpu: lower TernaryConv to the GPU kernel.
        vector_floats, vector_registers: SIMD lanes and registers of the CPU target.
    Returns:
        The tvm.IRModule with a Relax `main`.
    Raises:
        ExportError: unsupported ops (all listed) or a TernaryConv the kernel cannot take.
    """
    opsets = _opsets(model)
    opset = opsets.get("", opsets.get("ai.onnx", 1))
    importer = _importer_class()(shape_dict or {}, gpu, vector_floats, vector_registers, opsets)
    return importer.from_onnx(model.graph, opset)

