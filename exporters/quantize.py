"""int8 export: ONNX Runtime static quantization (QDQ, per-channel weights) plus our QTernaryConv.

`quantize_onnx(model, path, ...)` writes an int8 model.onnx whose input stays float32 (the first
QuantizeLinear is inside the graph), in five graph steps:

1. export the network with `--ops standard` (exporters.onnx): every TernaryConv becomes a plain
   Conv with its scale folded into float weights. ONNX Runtime's calibrator cannot load our kernel
   library, and this graph computes exactly what the TernaryConv graph computes;
2. `batchnorm_as_conv`: every BatchNormalization left on the residual stream (pre-activation
   blocks: it cannot fold into a conv) becomes the equivalent depthwise 1x1 Conv, so it is
   quantized like any conv (QLinearConv) instead of running in float between a dequantize and a
   quantize;
3. `quantize_static` (onnxruntime.quantization): uint8 activations, per-channel int8 weights, QDQ
   format, calibrated on real images (exporters.calibration) with the chosen method;
4. `float_outputs`: the convs computing the graph outputs write them in float (no 8-bit heatmaps);
5. `fuse_ternary`: each DequantizeLinear -> Conv(ternary weights) -> QuantizeLinear becomes one
   `ai.lbdeploy::QTernaryConv` on the uint8 tensors, with the packed ternary weights and the float
   scale/bias of the TernaryConv and the calibrated input/output scales, so 1x1 -> ternary -> 1x1
   stays uint8 (ONNX Runtime fuses the DQ -> 1x1 Conv -> Q around it into QLinearConv). For ONNX
   Runtime the op is written channels-last (layout NHWC) between two explicit Transposes: ONNX
   Runtime runs its uint8 convs and MaxPool channels-last and its transpose optimizer cancels
   these Transposes against its own, so the ternary layers read and write NHWC tensors directly.
   TVM graphs keep the NCHW form (LAYOUTS below).

Dense networks (SHN) go through steps 1-4 only: plain QDQ for comparison. To quantize another op
type, add it to QUANTIZED_OPS; to fuse another float pattern into an integer op, add a pass like
`fuse_ternary`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from lbdeploy.errors import CalibrationError, ExportError

PRECISION = "int8"
PRECISIONS = ("int8",)
# Ops given QDQ pairs. Relu is listed so that ONNX Runtime folds it into the range of the tensor
# before it (it removes the node); Concat joins LBRN-3's half-ternary branches.
QUANTIZED_OPS = ["Conv", "Add", "MaxPool", "Resize", "Relu", "Concat"]
FORMAT = {"format": "QDQ", "activations": "uint8", "weights": "int8 per-channel (symmetric)"}
DENSE_WEIGHT_SUFFIX = ".dense_weight"  # exporters.folding.TernaryConvOp's float weights (ops="standard")
QUANTIZED_SUFFIX = "_quantized"  # onnxruntime.quantization's name for a quantized initializer
# QTernaryConv's memory order per backend (lbdeploy.ops.qternary_conv.LAYOUTS): channels-last where
# the runtime runs its int8 convs channels-last; TVM's kernel is NCHW.
LAYOUTS = {"ort": "NHWC", "tvm": "NCHW"}
TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


def ternary_layout(backend: str) -> str:
    """QTernaryConv's memory order in an int8 graph for `backend` (LAYOUTS; NCHW for any other)."""
    return LAYOUTS.get(backend, "NCHW")


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime.quantization logs one line per tensor on the root logger, its calibrators print
    progress on stdout and ONNX Runtime warns about every unused initializer; keep errors only."""
    import onnxruntime

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    onnxruntime.set_default_logger_severity(3)  # quant_pre_process's session: no per-initializer warnings
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
        onnxruntime.set_default_logger_severity(2)  # ONNX Runtime's default


def batchnorm_as_conv(model) -> int:
    """Replace every BatchNormalization (inference form) by the equal depthwise 1x1 Conv, in place.

    Returns:
        The number of nodes replaced.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    values = {init.name: init for init in graph.initializer}
    nodes, replaced = [], 0
    for node in graph.node:
        if node.op_type != "BatchNormalization" or not all(name in values for name in node.input[1:5]):
            nodes.append(node)
            continue
        gamma, beta, mean, var = (numpy_helper.to_array(values[name]).astype(np.float64) for name in node.input[1:5])
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        scale = gamma / np.sqrt(var + eps)
        channels = scale.shape[0]
        weight, bias = f"{node.name}.as_conv.weight", f"{node.name}.as_conv.bias"
        graph.initializer.extend([numpy_helper.from_array(scale.reshape(channels, 1, 1, 1).astype(np.float32), weight),
                                  numpy_helper.from_array((beta - mean * scale).astype(np.float32), bias)])
        nodes.append(helper.make_node("Conv", [node.input[0], weight, bias], [node.output[0]],
                                      name=f"{node.name}AsConv", group=channels, kernel_shape=[1, 1]))
        replaced += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return replaced


def check_ranges(model) -> None:
    """Every activation scale of a quantized model must be finite and positive.

    Raises:
        CalibrationError: an activation overflows float32 (inf/nan) on the calibration images, so no
            int8 range can hold it.
    """
    from onnx import numpy_helper

    values = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[1] in values:
            scale = numpy_helper.to_array(values[node.input[1]])
            if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
                raise CalibrationError(
                    f"activation {node.input[0]!r} overflows the int8 range (calibrated scale {scale.ravel()[:3]}): "
                    "the model produces inf/nan on the calibration images; check the model with "
                    "`lbdeploy eval` or export it without --quantize")


def quantize_qdq(fp32_path: Path, out_path: Path, images: np.ndarray, method: str, work: Path) -> None:
    """Static QDQ quantization of a standard-ops model, calibrated on `images` (model inputs).

    Raises:
        CalibrationError: the calibrated ranges overflow; ExportError: ONNX Runtime failed.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    from lbdeploy.exporters.calibration import image_batches

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    prepared = work / "prepared.onnx"
    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name
    try:
        with _quiet_quantizer():
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(out_path), image_batches(images, input_name),
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=QUANTIZED_OPS, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method],
                            extra_options={"CalibMaxIntermediateOutputs": 8 if method == "minmax" else None})
    except (ValueError, RuntimeError) as err:
        raise ExportError(f"ONNX Runtime quantization failed: {str(err).splitlines()[0][:300]}") from None


def ternary_ops(wrapped) -> dict:
    """Initializer name of each TernaryConvOp's float weight (as exported with ops="standard") -> the module."""
    from lbdeploy.exporters.folding import TernaryConvOp

    return {f"{name}{DENSE_WEIGHT_SUFFIX}": module for name, module in wrapped.named_modules()
            if isinstance(module, TernaryConvOp)}


def _consumers(graph) -> dict:
    found = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def qternary_nodes(inputs: list[str], output: str, attrs, prefix: str, layout: str = "NCHW") -> list:
    """The nodes of one QTernaryConv from the NCHW tensor `inputs[0]` to the NCHW tensor `output`.

    NCHW: the op alone. NHWC: the op channels-last between Transpose(NCHW -> NHWC) and
    Transpose(NHWC -> NCHW), named `<prefix>/ToNHWC` and `<prefix>/ToNCHW`, which ONNX Runtime's
    transpose optimizer cancels against its channels-last neighbours.
    """
    from onnx import helper

    from lbdeploy.ops.qonnx_schema import make_node
    from lbdeploy.ops.qternary_conv import OP_TYPE

    if layout != "NHWC":
        return [make_node(inputs, [output], attrs, name=f"{prefix}/{OP_TYPE}")]
    x, y = f"{prefix}.x_nhwc", f"{prefix}.y_nhwc"
    return [helper.make_node("Transpose", [inputs[0]], [x], name=f"{prefix}/ToNHWC", perm=TO_NHWC),
            make_node([x, *inputs[1:]], [y], attrs, name=f"{prefix}/{OP_TYPE}", layout=layout),
            helper.make_node("Transpose", [y], [output], name=f"{prefix}/ToNCHW", perm=TO_NCHW)]


def fuse_ternary(model, ternary: dict, layout: str = "NCHW") -> int:
    """Rewrite DQ -> Conv(ternary) [-> Relu] -> Q into one QTernaryConv on the uint8 tensors, in place.

    Args:
        model: the QDQ model from `quantize_qdq`.
        ternary: from `ternary_ops`: float weight name -> TernaryConvOp (packed weights, scale, bias,
            geometry and activation).
        layout: "NCHW", or "NHWC": the op channels-last between Transpose(NCHW -> NHWC) and
            Transpose(NHWC -> NCHW), which ONNX Runtime cancels against its channels-last neighbours.
    Returns:
        The number of convs fused. A ternary conv with an activation the quantized op lacks (sigmoid)
        stays a QDQ Conv.
    """
    if not ternary:
        return 0
    from onnx import helper, numpy_helper

    from lbdeploy.ops.qternary_conv import ACTIVATIONS as Q_ACTIVATIONS, OP_VERSION
    from lbdeploy.ops.ternary_conv import DOMAIN

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)
    removed, added, fused = set(), [], 0
    for conv in list(graph.node):
        if conv.op_type != "Conv" or len(conv.input) < 2:
            continue
        weight_dq = producer.get(conv.input[1])
        op = ternary.get(weight_dq.input[0][:-len(QUANTIZED_SUFFIX)]) if weight_dq is not None else None
        x_dq = producer.get(conv.input[0])
        if op is None or op.attrs.activation not in Q_ACTIVATIONS or x_dq is None or x_dq.op_type != "DequantizeLinear":
            continue
        chain = [conv]
        after = consumers.get(conv.output[0], [])
        if len(after) == 1 and after[0].op_type == "Relu":
            chain.append(after[0])
            after = consumers.get(after[0].output[0], [])
        if len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        y_q = after[0]
        prefix = conv.name.rsplit("/", 1)[0]
        packed, scale, bias = (f"{prefix}.{field}" for field in ("packed", "scale", "bias"))
        graph.initializer.extend([numpy_helper.from_array(op.packed.numpy(), packed),
                                  numpy_helper.from_array(op.scale.numpy().astype(np.float32), scale),
                                  numpy_helper.from_array(op.bias.numpy().astype(np.float32), bias)])
        fused_nodes = qternary_nodes([x_dq.input[0], x_dq.input[1], x_dq.input[2], packed, scale, bias, y_q.input[1],
                                      y_q.input[2]], y_q.output[0], op.attrs, prefix, layout)
        added.append((conv, fused_nodes))
        bias_dq = producer.get(conv.input[2]) if len(conv.input) > 2 else None
        removed.update(id(node) for node in [*chain, y_q, weight_dq, bias_dq] if node is not None)
        if all(id(user) in removed for user in consumers.get(x_dq.output[0], [])):
            removed.add(id(x_dq))
        fused += 1
    replacement = {id(conv): fused_nodes for conv, fused_nodes in added}
    nodes = [new for node in graph.node if id(node) not in removed or id(node) in replacement
             for new in replacement.get(id(node), [node])]
    del graph.node[:]
    graph.node.extend(nodes)
    if fused:  # our domain at QTernaryConv's version, whatever an earlier pass wrote for it
        kept = [op for op in model.opset_import if op.domain != DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend([*kept, helper.make_opsetid(DOMAIN, OP_VERSION)])
    return fused


def _drop_unused_initializers(model) -> None:
    used = {name for node in model.graph.node for name in node.input}
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def requantize_pairs(model) -> list[str]:
    """Names of the QuantizeLinear nodes fed straight by a DequantizeLinear (a float detour with no
    compute); an int8 graph of ours has none."""
    producer = {out: node for node in model.graph.node for out in node.output}
    return [node.name for node in model.graph.node if node.op_type == "QuantizeLinear"
            and getattr(producer.get(node.input[0]), "op_type", None) == "DequantizeLinear"]


def check_int8_onnx(model) -> None:
    """onnx.checker full check of an int8 graph, QTernaryConv schema registered.

    Raises:
        ExportError: the graph is not valid ONNX.
    """
    import onnx

    from lbdeploy.ops.qonnx_schema import register_schema

    register_schema()
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportError(f"the int8 ONNX model is invalid: {str(err).splitlines()[0][:300]}") from None


def with_value_shapes(model):
    """`model` with the inferred shape of every tensor recorded (value_info), QTernaryConv's included.

    ONNX Runtime cannot infer the shapes of a custom op's outputs; without a recorded rank its
    layout optimizer leaves the convs after a QTernaryConv NCHW (it needs the rank to transpose them).
    """
    import onnx

    from lbdeploy.ops.qonnx_schema import register_schema

    register_schema()
    return onnx.shape_inference.infer_shapes(model, data_prop=True)


def quantize_onnx(model, path: Path, input_size: tuple[int, int], task: str, images: np.ndarray, method: str,
                  opset: int, progress: Callable[[str], None] = lambda message: None,
                  layout: str = LAYOUTS["ort"]) -> tuple[list[str], dict]:
    """Write the int8 model.onnx of `model` to `path`.

    Args:
        model: the PyTorch network (eval mode); input_size: (H, W); task: "pose" or "classification".
        images: calibration inputs [N, 3, H, W] float32, normalized.
        method: "minmax", "entropy" or "percentile".
        opset: ONNX opset of the default domain.
        progress: called with a short message before each step.
        layout: QTernaryConv's memory order (LAYOUTS: NHWC for ONNX Runtime, NCHW for TVM).
    Returns:
        (output names, the manifest's "quantization" section without the calibration record).
    Raises:
        CalibrationError: activations overflow the int8 range; ExportError: quantization failed.
    """
    import onnx

    from lbdeploy.exporters.folding import prepare_for_export
    from lbdeploy.exporters.onnx import export_onnx

    with tempfile.TemporaryDirectory(prefix="lbdeploy-int8-") as tmp:
        work = Path(tmp)
        progress(f"exporting ONNX for calibration (opset {opset}, standard ops)")
        names = export_onnx(model, work / "fp32.onnx", input_size, task, ops="standard", opset=opset, progress=progress)
        fp32 = onnx.load(str(work / "fp32.onnx"))
        batchnorms = batchnorm_as_conv(fp32)
        onnx.save(fp32, str(work / "fp32-bn.onnx"))
        progress(f"calibrating on {len(images)} images ({method}) and quantizing (QDQ, per-channel int8 weights)")
        quantize_qdq(work / "fp32-bn.onnx", work / "qdq.onnx", images, method, work)
        quantized = onnx.load(str(work / "qdq.onnx"))
    check_ranges(quantized)
    float_outputs(quantized)
    fused = fuse_ternary(quantized, ternary_ops(prepare_for_export(model, "standard")), layout)
    _drop_unused_initializers(quantized)
    quantized.producer_name = "lbdeploy"
    check_int8_onnx(quantized)
    quantized = with_value_shapes(quantized)
    onnx.save(quantized, str(path))
    return names, {"precision": PRECISION, **FORMAT, "ternary_convs": fused, "batchnorms_as_conv": batchnorms,
                   "ternary_layout": layout}


def float_outputs(model) -> int:
    """Give the graph outputs the float values of the convs that compute them, in place.

    ONNX Runtime's quantizer quantizes every graph output (Conv -> Q -> DQ -> output): 256 levels
    on a heatmap make neighbouring peaks tie. Here the conv writes the output in float (ONNX
    Runtime then runs that conv as DQ -> Conv; the QuantizeLinear stays where later layers read it).

    Returns:
        The number of outputs changed.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    changed, removed = 0, set()
    for output in graph.output:
        dq = producer.get(output.name)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        value = q.input[0]
        for node in graph.node:
            node.input[:] = [output.name if name == value else name for name in node.input]
            node.output[:] = [output.name if name == value else name for name in node.output]
        removed.add(id(dq))
        if not any(q.output[0] in node.input for node in graph.node if id(node) not in removed):
            removed.add(id(q))
        changed += 1
    nodes = [node for node in graph.node if id(node) not in removed]
    del graph.node[:]
    graph.node.extend(nodes)
    return changed
