"""The two forms of a ternary layer in an exported graph, and the rewrite from one to the other.

Every ternary conv of an artifact runs in one of two forms (docs/export.md, "Kernel choice"):

- `ternary`: our op, `ai.lbdeploy::TernaryConv` (fp32) or `QTernaryConv` (int8), on the 2-bit
  packed weights with a per-channel scale and bias;
- `dense`: the runtime's own conv on the same ternary weights: a plain `Conv` with the scale folded
  into float weights, then the activation (fp32); or `DequantizeLinear -> Conv -> [Relu] ->
  QuantizeLinear` with per-channel int8 weights of +-127 and an int32 bias, which ONNX Runtime
  fuses into its `QLinearConv` (int8).

A layer is named by the module path its nodes carry (`hg.0.res.1.path.3`); its nodes are named
`<layer>/<op>`. `to_dense` and `to_ternary` rewrite named layers in place with onnx and numpy
only (no torch), so `lbdeploy tune` can flip a layer on a board. The fp32 rewrite is exact both
ways (the ternary weights times the scale are the dense weights, bit for bit); the int8 dense form
quantizes the float bias to int32 as ONNX Runtime's quantizer does, so a layer turned dense and back
keeps that rounding of its bias (once: a second round trip changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from lbdeploy.errors import ExportError
from lbdeploy.ops.ternary_conv import DOMAIN, OP_TYPE as FP32_OP, TernaryConvAttrs, pack_ternary, unpack_ternary

FORMS = ("ternary", "dense")
INT8_OP = "QTernaryConv"
_INT8_LEVEL = 127  # |int8 weight| of a +-1 tap in the dense int8 form (symmetric per-channel quantization)
_ACTIVATION_OPS = {"Relu": "relu", "Sigmoid": "sigmoid"}


@dataclass
class Layer:
    """One ternary conv of a graph: its name, op precision and weight density."""

    name: str
    precision: str  # "fp32" or "int8"
    density: float

    def to_dict(self) -> dict:
        """The JSON form of the layer's identity (its choice and the reasons are added by kernel_choice)."""
        return {"name": self.name, "precision": self.precision, "density": round(self.density, 4)}


def _initializers(graph) -> dict:
    return {init.name: init for init in graph.initializer}


def _array(graph, name: str) -> np.ndarray:
    from onnx import numpy_helper

    init = _initializers(graph).get(name)
    if init is None:
        raise ExportError(f"the graph has no constant {name!r}; it was not written by lbdeploy export")
    return numpy_helper.to_array(init)


def _add(graph, name: str, value: np.ndarray) -> str:
    from onnx import numpy_helper

    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def _layer_name(node) -> str:
    return node.name.rsplit("/", 1)[0]


def _attrs(node) -> TernaryConvAttrs:
    from lbdeploy.ops.onnx_schema import attrs_from

    values = {a.name: a for a in node.attribute}
    return attrs_from(values.get)


def _consumers(graph, name: str) -> list:
    return [node for node in graph.node if name in node.input]


def _producer(graph, name: str):
    return next((node for node in graph.node if name in node.output), None)


def _density(ternary: np.ndarray) -> float:
    return float(np.count_nonzero(ternary)) / max(ternary.size, 1)


def _packed_channels(attrs: TernaryConvAttrs, packed: np.ndarray) -> int | None:
    """Input channels per group from the packed row length (pack_ternary pads K = C/g * kH * kW to whole
    bytes); None when several counts fit (kernels of fewer than 4 taps)."""
    taps = attrs.kernel_shape[0] * attrs.kernel_shape[1]
    fits = [c for c in range(1, packed.shape[1] * 4 // taps + 1) if -(-c * taps // 4) == packed.shape[1]]
    return fits[0] if len(fits) == 1 else None


def _channels(model) -> dict:
    """Channel count (dim 1) of every 4-d value of `model` with a known one, by shape inference."""
    import onnx

    from lbdeploy.ops import onnx_schema, qonnx_schema

    onnx_schema.register_schema()
    qonnx_schema.register_schema()
    try:
        graph = onnx.shape_inference.infer_shapes(model).graph
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        graph = model.graph
    found = {}
    for info in [*graph.value_info, *graph.input, *graph.output]:
        dims = info.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            found[info.name] = int(dims[1].dim_value)
    return found


def _layout_transposes(graph, node) -> list:
    """The Transposes around a channels-last QTernaryConv (exporters.quantize.qternary_nodes), [] for NCHW."""
    if not any(a.name == "layout" and a.s == b"NHWC" for a in node.attribute):
        return []
    to_nhwc, to_nchw = _producer(graph, node.input[0]), _consumers(graph, node.output[0])
    if to_nhwc is None or to_nhwc.op_type != "Transpose" or len(to_nchw) != 1 or to_nchw[0].op_type != "Transpose":
        raise ExportError(f"the channels-last {node.name!r} is not between its two Transposes; re-export the model")
    return [to_nhwc, to_nchw[0]]


def _nchw_input(graph, node) -> str:
    """The NCHW tensor a ternary node reads (before the Transpose of a channels-last QTernaryConv)."""
    around = _layout_transposes(graph, node) if node.op_type == INT8_OP else []
    return around[0].input[0] if around else node.input[0]


def _ternary_weights(graph, node, channels: dict) -> tuple[np.ndarray, TernaryConvAttrs]:
    """The int8 ternary weights [Cout, C/g, kH, kW] and attributes of a TernaryConv / QTernaryConv node."""
    attrs = _attrs(node)
    packed = _array(graph, node.input[1] if node.op_type == FP32_OP else node.input[3])
    x = _nchw_input(graph, node)
    per_group = channels[x] // attrs.group if x in channels else _packed_channels(attrs, packed)
    if per_group is None:
        raise ExportError(f"cannot tell the input channels of {node.name!r}; re-export the model")
    return unpack_ternary(packed, (packed.shape[0], per_group, *attrs.kernel_shape)), attrs


def list_layers(model, known=()) -> list[Layer]:
    """Every ternary layer of `model`, in graph order: those in the ternary form, and the layers named
    in `known` (an artifact's recorded choice) that are in the dense form."""
    graph, channels = model.graph, _channels(model)
    dense_names = {f"{name}/Conv": name for name in known}
    producer = {out: node for node in graph.node for out in node.output}
    layers = []
    for node in graph.node:
        if node.domain == DOMAIN and node.op_type in (FP32_OP, INT8_OP):
            weights, _ = _ternary_weights(graph, node, channels)
            layers.append(Layer(_layer_name(node), "fp32" if node.op_type == FP32_OP else "int8", _density(weights)))
        elif node.op_type == "Conv" and node.name in dense_names:
            weight_dq = producer.get(node.input[1])
            int8 = weight_dq is not None and weight_dq.op_type == "DequantizeLinear"
            weights = _array(graph, weight_dq.input[0] if int8 else node.input[1])
            layers.append(Layer(dense_names[node.name], "int8" if int8 else "fp32", _density(weights)))
    return layers


def _find(graph, name: str, op_type: str):
    node = next((n for n in graph.node if n.name == f"{name}/{op_type}"), None)
    if node is None:
        raise ExportError(f"layer {name!r} has no {op_type} node in model.onnx; the artifact's kernel choice does not "
                          "match its graph (re-export the model)")
    return node


def _replace(graph, old: list, new: list) -> None:
    """Put `new` nodes where the first of `old` stood and drop the rest of `old`."""
    removed = {id(node) for node in old}
    nodes = []
    for node in graph.node:
        if id(node) == id(old[0]):
            nodes.extend(new)
        elif id(node) not in removed:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _fp32_to_dense(graph, name: str, channels: dict) -> None:
    from onnx import helper

    node = _find(graph, name, FP32_OP)
    weights, attrs = _ternary_weights(graph, node, channels)
    scale = _array(graph, node.input[2]).astype(np.float32)
    dense = weights.astype(np.float32) * scale.reshape(-1, 1, 1, 1)
    w = _add(graph, f"{name}.dense_weight", dense)
    b = _add(graph, f"{name}.dense_bias", _array(graph, node.input[3]).astype(np.float32))
    conv_out = f"{name}/conv_out" if attrs.activation != "none" else node.output[0]
    nodes = [helper.make_node("Conv", [node.input[0], w, b], [conv_out], name=f"{name}/Conv",
                              kernel_shape=list(attrs.kernel_shape), strides=list(attrs.strides), pads=list(attrs.pads),
                              dilations=list(attrs.dilations), group=attrs.group)]
    if attrs.activation != "none":
        op = {v: k for k, v in _ACTIVATION_OPS.items()}[attrs.activation]
        nodes.append(helper.make_node(op, [conv_out], [node.output[0]], name=f"{name}/{op}"))
    _replace(graph, [node], nodes)


def _conv_attrs(conv, activation: str) -> TernaryConvAttrs:
    values = {a.name: a for a in conv.attribute}
    ints = lambda key, default: tuple(values[key].ints) if key in values else default  # noqa: E731
    return TernaryConvAttrs(kernel_shape=ints("kernel_shape", (3, 3)), strides=ints("strides", (1, 1)),
                            pads=ints("pads", (0, 0, 0, 0)), dilations=ints("dilations", (1, 1)),
                            group=values["group"].i if "group" in values else 1, activation=activation)


def _activation_after(graph, value: str, name: str):
    users = _consumers(graph, value)
    if len(users) == 1 and users[0].op_type in _ACTIVATION_OPS and users[0].name == f"{name}/{users[0].op_type}":
        return users[0]
    return None


def _split_scale(dense: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(ternary int8 weights, float32 scale) with ternary * scale == dense exactly."""
    scale = np.abs(dense).reshape(dense.shape[0], -1).max(axis=1).astype(np.float32)
    safe = np.where(scale == 0, 1, scale).reshape(-1, 1, 1, 1)
    ternary = np.rint(dense / safe).astype(np.int8)
    if not np.array_equal(ternary.astype(np.float32) * scale.reshape(-1, 1, 1, 1), dense):
        raise ExportError(f"the dense weights of layer {name!r} are not ternary times a per-channel scale; "
                          "it cannot run as our op (re-export the model)")
    return ternary, scale


def _fp32_to_ternary(graph, name: str, channels: dict) -> None:
    from lbdeploy.ops.onnx_schema import make_node

    conv = _find(graph, name, "Conv")
    act = _activation_after(graph, conv.output[0], name)
    ternary, scale = _split_scale(_array(graph, conv.input[1]).astype(np.float32), name)
    bias = _array(graph, conv.input[2]) if len(conv.input) > 2 else np.zeros(ternary.shape[0], np.float32)
    attrs = _conv_attrs(conv, _ACTIVATION_OPS[act.op_type] if act is not None else "none")
    inputs = [conv.input[0], _add(graph, f"{name}.packed", pack_ternary(ternary)),
              _add(graph, f"{name}.scale", scale), _add(graph, f"{name}.bias", bias.astype(np.float32))]
    output = act.output[0] if act is not None else conv.output[0]
    _replace(graph, [conv, *([act] if act is not None else [])], [make_node(inputs, [output], attrs,
                                                                            name=f"{name}/{FP32_OP}")])


def _int8_to_dense(graph, name: str, channels: dict) -> None:
    from onnx import helper

    node = _find(graph, name, INT8_OP)
    weights, attrs = _ternary_weights(graph, node, channels)
    around = _layout_transposes(graph, node)
    _, x_scale, x_zp, _, scale_name, bias_name, y_scale, y_zp = node.input
    x = around[0].input[0] if around else node.input[0]
    y = around[1].output[0] if around else node.output[0]
    scale = _array(graph, scale_name).astype(np.float32)
    sign = np.where(scale < 0, -1, 1).astype(np.int8).reshape(-1, 1, 1, 1)
    w_scale = np.where(scale == 0, 1, np.abs(scale) / _INT8_LEVEL).astype(np.float32)
    w_q = (weights * sign * np.int8(_INT8_LEVEL) * (scale != 0).reshape(-1, 1, 1, 1)).astype(np.int8)
    b_scale = (_array(graph, x_scale).astype(np.float32) * w_scale).astype(np.float32)
    b_q = np.clip(np.rint(_array(graph, bias_name).astype(np.float64) / b_scale), -2**31, 2**31 - 1).astype(np.int32)
    channels = len(scale)
    inits = {key: _add(graph, f"{name}.dense_{key}", value) for key, value in (
        ("weight", w_q), ("weight_scale", w_scale), ("weight_zero_point", np.zeros(channels, np.int8)),
        ("bias", b_q), ("bias_scale", b_scale), ("bias_zero_point", np.zeros(channels, np.int32)))}
    x_f, w_f, b_f, conv_out = (f"{name}/{part}" for part in ("x_float", "w_float", "b_float", "conv_out"))
    act_out = f"{name}/act_out"
    nodes = [helper.make_node("DequantizeLinear", [x, x_scale, x_zp], [x_f], name=f"{name}/DequantizeLinear_x"),
             helper.make_node("DequantizeLinear", [inits["weight"], inits["weight_scale"], inits["weight_zero_point"]],
                              [w_f], name=f"{name}/DequantizeLinear_w", axis=0),
             helper.make_node("DequantizeLinear", [inits["bias"], inits["bias_scale"], inits["bias_zero_point"]],
                              [b_f], name=f"{name}/DequantizeLinear_b", axis=0),
             helper.make_node("Conv", [x_f, w_f, b_f], [conv_out], name=f"{name}/Conv",
                              kernel_shape=list(attrs.kernel_shape), strides=list(attrs.strides),
                              pads=list(attrs.pads), dilations=list(attrs.dilations), group=attrs.group)]
    if attrs.activation == "relu":
        nodes.append(helper.make_node("Relu", [conv_out], [act_out], name=f"{name}/Relu"))
    quantized = act_out if attrs.activation == "relu" else conv_out
    nodes.append(helper.make_node("QuantizeLinear", [quantized, y_scale, y_zp], [y], name=f"{name}/QuantizeLinear"))
    _replace(graph, [*around[:1], node, *around[1:]], nodes)


def _int8_to_ternary(graph, name: str, channels: dict, layout: str) -> None:
    from lbdeploy.exporters.quantize import qternary_nodes

    conv = _find(graph, name, "Conv")
    x_dq, w_dq, b_dq = (_find(graph, name, f"DequantizeLinear_{part}") for part in "xwb")
    act = _activation_after(graph, conv.output[0], name)
    q = _find(graph, name, "QuantizeLinear")
    w_q = _array(graph, w_dq.input[0]).astype(np.int32)
    w_scale = _array(graph, w_dq.input[1]).astype(np.float32)
    level = np.abs(w_q).reshape(w_q.shape[0], -1).max(axis=1)
    ternary = np.sign(w_q).astype(np.int8)
    if not np.array_equal(np.abs(w_q), np.abs(ternary).astype(np.int32) * level.reshape(-1, 1, 1, 1)):
        raise ExportError(f"the int8 weights of layer {name!r} are not ternary; it cannot run as our op")
    scale = (w_scale * level).astype(np.float32)
    bias = (_array(graph, b_dq.input[0]).astype(np.float64) * _array(graph, b_dq.input[1])).astype(np.float32)
    attrs = _conv_attrs(conv, "relu" if act is not None else "none")
    x, x_scale, x_zp = x_dq.input
    inputs = [x, x_scale, x_zp, _add(graph, f"{name}.packed", pack_ternary(ternary)),
              _add(graph, f"{name}.scale", scale), _add(graph, f"{name}.bias", bias), q.input[1], q.input[2]]
    _replace(graph, [conv, x_dq, w_dq, b_dq, q, *([act] if act is not None else [])],
             qternary_nodes(inputs, q.output[0], attrs, name, layout))


def _drop_unused_initializers(graph) -> None:
    used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _fix_opset_import(model) -> None:
    """Our domain is imported exactly when a node of it remains (at the version of the op that does)."""
    from onnx import helper

    from lbdeploy.ops.qternary_conv import OP_VERSION as INT8_VERSION
    from lbdeploy.ops.ternary_conv import OP_VERSION as FP32_VERSION

    ours = {node.op_type for node in model.graph.node if node.domain == DOMAIN}
    kept = [op for op in model.opset_import if op.domain != DOMAIN]
    if ours:
        kept.append(helper.make_opsetid(DOMAIN, INT8_VERSION if INT8_OP in ours else FP32_VERSION))
    del model.opset_import[:]
    model.opset_import.extend(kept)


def set_forms(model, forms: dict[str, str], precision: str, layout: str = "NCHW") -> None:
    """Rewrite the layers of `forms` ({layer name: "ternary" | "dense"}) into those forms, in place.

    A layer already in the asked form is left alone (its nodes are found by name either way). An
    int8 layer turned ternary is written in `layout` (exporters.quantize.ternary_layout of the backend).

    Raises:
        ExportError: a named layer is missing, or its weights are not ternary.
    """
    graph, channels = model.graph, _channels(model)
    present = {_layer_name(node) for node in graph.node if node.domain == DOMAIN}
    rewrite = {("fp32", "dense"): _fp32_to_dense, ("fp32", "ternary"): _fp32_to_ternary,
               ("int8", "dense"): _int8_to_dense, ("int8", "ternary"): partial(_int8_to_ternary, layout=layout)}
    for name, form in forms.items():
        if form not in FORMS:
            raise ExportError(f"unknown kernel form {form!r} for layer {name!r}; choose {' or '.join(FORMS)}")
        if (name in present) == (form == "ternary"):
            continue
        rewrite[(precision, form)](graph, name, channels)
    _drop_unused_initializers(graph)
    _fix_opset_import(model)


def uses_custom_ops(model) -> bool:
    """True when a node of our domain (TernaryConv, QTernaryConv) remains in the graph."""
    return any(node.domain == DOMAIN for node in model.graph.node)


def custom_op_records(model) -> list[dict]:
    """The manifest's `custom_ops` for `model`: each op of our domain its nodes use, with its version."""
    from lbdeploy.ops.qternary_conv import OP_VERSION as INT8_VERSION
    from lbdeploy.ops.ternary_conv import OP_VERSION as FP32_VERSION

    used = sorted({node.op_type for node in model.graph.node if node.domain == DOMAIN})
    versions = {FP32_OP: FP32_VERSION, INT8_OP: INT8_VERSION}
    return [{"domain": DOMAIN, "op_type": op, "version": versions[op]} for op in used]
