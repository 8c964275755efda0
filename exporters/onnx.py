"""PyTorch -> ONNX for LBRN networks (opset 18, dynamic batch, TernaryConv as one custom op).

`export_onnx(model, path, ...)` folds the network (exporters.folding), traces it with
`torch.onnx.export(dynamo=True)`, drops unused initializers, names inputs/outputs, and checks the
result with `onnx.checker` (full check, our TernaryConv schema registered) and strict shape
inference. Returns the output names in order.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np

from lbdeploy.errors import ExportError
from lbdeploy.ops.ternary_conv import DOMAIN, OP_TYPE, OP_VERSION, check_packed
from lbdeploy.tasks import get_task

OPSET = 18
INPUT_NAME = "image"
BATCH_DIM = "batch"


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's progress chatter; errors still raise."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _name_nodes_by_module(model) -> None:
    """Name each node after the module that produced it ("layer1.0.path.3/TernaryConv"), unique.

    The dynamo exporter records the module path of every node in its `name_scopes` metadata; the
    names it generates otherwise ("node__symbolic_16") say nothing in a profile.
    """
    import ast

    taken: dict[str, int] = {}
    for node in model.graph.node:
        scopes = [p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"]
        try:
            modules = [s for s in ast.literal_eval(scopes[0]) if s.startswith("model.")] if scopes else []
        except (ValueError, SyntaxError):
            modules = []
        base = f"{modules[-1][len('model.'):]}/{node.op_type}" if modules else node.op_type
        count = taken.get(base, 0)
        taken[base] = count + 1
        node.name = base if count == 0 else f"{base}_{count}"


# Node metadata that the dynamo exporter fills with the build host's file paths (the checkout, the venv).
_HOST_METADATA = ("pkg.torch.onnx.stack_trace",)


def _graphs(graph):
    """`graph` and every subgraph held in its nodes' attributes."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _graphs(sub)


def _strip_build_host_metadata(model) -> None:
    """Drop node metadata and doc strings that name files of the build host (stack traces), so that
    model.onnx carries no absolute path of the machine that exported it."""
    nodes = [node for graph in _graphs(model.graph) for node in graph.node]
    nodes += [node for function in model.functions for node in function.node]
    for node in nodes:
        kept = [prop for prop in node.metadata_props if prop.key not in _HOST_METADATA]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
        node.doc_string = ""


def _drop_unused_initializers(model) -> None:
    used = {name for node in model.graph.node for name in node.input}
    used |= {out.name for out in model.graph.output}
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def check_ternary_initializers(model) -> None:
    """Run `check_packed` on the packed weights of every TernaryConv node of an ONNX model.

    Raises:
        TernaryWeightError: an initializer holds the invalid 2-bit code 3 (padding codes included).
    """
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.domain == DOMAIN and node.op_type == OP_TYPE and node.input[1] in initializers:
            weights = numpy_helper.to_array(initializers[node.input[1]])
            if weights.dtype == np.uint8:
                check_packed(weights, what=f"the weights {node.input[1]!r} of TernaryConv node {node.name!r}")


def check_onnx(model) -> None:
    """onnx.checker full check + strict shape inference, TernaryConv schema registered.

    Raises:
        ExportError: the model is not valid ONNX.
    """
    import onnx

    from lbdeploy.ops.onnx_schema import register_schema

    register_schema()
    check_ternary_initializers(model)
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportError(f"the exported ONNX model is invalid: {str(err).splitlines()[0][:300]}") from None


def export_onnx(model, path: Path, input_size: tuple[int, int], task: str, ops: str = "custom",
                opset: int = OPSET, progress=lambda message: None) -> list[str]:
    """Export `model` (built by build_model, eval mode) to `path`.

    Args:
        model: the PyTorch network.
        path: the model.onnx to write.
        input_size: (H, W) of the input image.
        task: "pose", "saliency" or "classification" (decides the output names).
        ops: "custom" (TernaryConv nodes) or "standard" (plain Conv).
        opset: ONNX opset of the default domain (>= 17).
        progress: called with a message when the graph comes from the trace cache.
    Returns:
        The graph's output names, in order.
    Raises:
        ExportError: tracing, conversion or checking failed.
    """
    import torch

    from lbdeploy.exporters.folding import prepare_for_export

    wrapped = prepare_for_export(model, ops)
    example = torch.zeros(2, 3, *input_size)
    with torch.no_grad():
        count = len(wrapped(example))
    names = get_task(task).output_names(count)
    trace_to_onnx(wrapped, example, path, INPUT_NAME, names, ops, opset, dynamic_batch=True, progress=progress)
    return names


def trace_to_onnx(wrapped, example, path: Path, input_name: str, names: list[str], ops: str = "custom",
                  opset: int = OPSET, dynamic_batch: bool = True, progress=lambda message: None) -> None:
    """Trace an export-ready module (from `prepare_for_export`) to a checked ONNX file.

    The same network traced before with the same settings comes from the trace cache instead
    (exporters/trace_cache.py), checked again.

    Args:
        wrapped: the module; example: an input tensor of the traced shape.
        path: the .onnx to write; input_name / names: the graph's input and output names.
        ops: "custom" keeps the ai.lbdeploy opset import, "standard" drops it.
        opset: ONNX opset of the default domain (>= 17).
        dynamic_batch: make the first input dimension symbolic.
        progress: called with a message when the graph comes from the cache.
    Raises:
        ExportError: tracing, conversion or checking failed.
    """
    from lbdeploy.exporters.trace_cache import restore, store, trace_key

    if opset < 17:
        raise ExportError(f"opset must be >= 17, got {opset}")
    call = {"input": input_name, "outputs": list(names), "ops": ops, "opset": opset, "dynamic_batch": dynamic_batch}
    key = trace_key(wrapped, example, call)
    if key is not None and restore(key, path, check_onnx):
        progress("ONNX graph from the trace cache (this network was traced before with these settings)")
        return
    _trace(wrapped, example, path, input_name, names, ops, opset, dynamic_batch)
    if key is not None:
        store(key, path)


def _trace(wrapped, example, path: Path, input_name: str, names: list[str], ops: str, opset: int,
           dynamic_batch: bool) -> None:
    """Trace with torch's dynamo exporter, tidy the graph, check it and save it at `path`."""
    import onnx
    import torch

    dynamic = ({0: torch.export.Dim(BATCH_DIM, min=1, max=1024)},) if dynamic_batch else None
    try:
        with _quiet():
            program = torch.onnx.export(
                wrapped, (example,), dynamo=True, opset_version=opset, input_names=[input_name],
                output_names=names, dynamic_shapes=dynamic, optimize=True, verbose=False,
            )
    except Exception as err:  # the exporter raises many internal types
        raise ExportError(f"torch.onnx.export failed: {str(err).strip().splitlines()[0][:300]}") from None
    proto = program.model_proto
    _drop_unused_initializers(proto)
    _name_nodes_by_module(proto)
    _strip_build_host_metadata(proto)
    if ops == "custom" and not any(op.domain == DOMAIN for op in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid(DOMAIN, OP_VERSION))
    if ops == "standard":
        kept = [op for op in proto.opset_import if op.domain != DOMAIN]
        del proto.opset_import[:]
        proto.opset_import.extend(kept)
    proto.producer_name = "lbdeploy"
    check_onnx(proto)
    onnx.save(proto, str(path))
