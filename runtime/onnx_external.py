"""The external-data files an ONNX model refers to, read from its bytes without the onnx package.

A board has onnxruntime but not onnx, and ONNX Runtime's own containment check for external
data differs between versions (1.17 follows `../` and symlinks). So the runtime finds every
tensor stored outside model.onnx itself and checks its `location` like any other artifact file
(runtime/verified.py: listed in `files`, inside the folder, sha256 as listed).

The walk follows the ONNX protobuf schema (onnx.proto field numbers): ModelProto.graph (7) and
.functions (25); GraphProto.node (1), .initializer (5), .sparse_initializer (15); FunctionProto.node
(7); NodeProto.attribute (5); AttributeProto.t (5), .g (6), .tensors (10), .graphs (11),
.sparse_tensor (22), .sparse_tensors (23); SparseTensorProto.values (1), .indices (2); TensorProto
.external_data (13, key/value entries) and .data_location (14, EXTERNAL = 1).
"""

from __future__ import annotations

from lbdeploy.errors import ArtifactError

_EXTERNAL = 1
# message kind -> {field number: message kind of that field} (length-delimited submessages only)
_CHILDREN = {
    "model": {7: "graph", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
_MAX_DEPTH = 64


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ArtifactError("model.onnx is not a valid ONNX file (truncated varint); re-export the model")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data: memoryview):
    """Yield (field number, wire type, value) of one protobuf message; value is an int or a memoryview."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ArtifactError("model.onnx is not a valid ONNX file (truncated field); re-export the model")
            value, pos = data[pos:pos + size], pos + size
        elif wire in (1, 5):
            value, pos = None, pos + (8 if wire == 1 else 4)
        else:
            raise ArtifactError(f"model.onnx is not a valid ONNX file (wire type {wire}); re-export the model")
        yield number, wire, value


def _entry(data: memoryview) -> tuple[str, str]:
    parts = {number: bytes(value).decode("utf-8", "replace") for number, wire, value in _fields(data) if wire == 2}
    return parts.get(1, ""), parts.get(2, "")


def _walk(data: memoryview, kind: str, depth: int, found: list[str]) -> None:
    if depth > _MAX_DEPTH:
        raise ArtifactError("model.onnx nests graphs too deeply; re-export the model")
    external, location = False, None
    for number, wire, value in _fields(data):
        if kind == "tensor" and number == 14 and wire == 0:
            external = value == _EXTERNAL
        elif kind == "tensor" and number == 13 and wire == 2:
            key, text = _entry(value)
            if key == "location":
                location = text
        elif wire == 2 and number in _CHILDREN[kind]:
            _walk(value, _CHILDREN[kind][number], depth + 1, found)
    if external:
        if not location:
            raise ArtifactError("model.onnx stores a tensor externally without a location; re-export the model")
        found.append(location)


def external_data_locations(model_bytes: bytes) -> list[str]:
    """The `location` of every tensor that `model_bytes` (a serialized ONNX model) keeps in another file.

    Raises:
        ArtifactError: the bytes are not a well-formed ONNX protobuf, or an external tensor has no location.
    """
    found: list[str] = []
    _walk(memoryview(model_bytes), "model", 0, found)
    return sorted(set(found))
