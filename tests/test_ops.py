"""The TernaryConv spec: packing, the reference vs PyTorch, the ONNX schema and onnx.reference."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from lbdeploy.errors import TernaryWeightError
from lbdeploy.ops import vectors
from lbdeploy.ops.onnx_schema import ReferenceTernaryConv, make_node, register_schema
from lbdeploy.ops.ternary_conv import (DOMAIN, TernaryConvAttrs, check_packed, pack_ternary, ternary_conv_reference,
                                       unpack_ternary)

VECTOR_DIR = Path(__file__).parent / "vectors"
VECTOR_FILES = sorted(VECTOR_DIR.glob("*.npz"))


def test_every_case_is_stored_and_current():
    assert {p.stem for p in VECTOR_FILES} == {c.name for c in vectors.CASES}
    for path in VECTOR_FILES:
        case, stored = vectors.load(path)
        fresh = vectors.generate(case)
        for key in ("x", "w", "w_packed", "scale", "bias", "y"):
            np.testing.assert_array_equal(stored[key], fresh[key], err_msg=f"{path.name}:{key}")


@pytest.mark.parametrize("k", [1, 3, 4, 5, 7, 9])
def test_pack_round_trip(k):
    rng = np.random.default_rng(k)
    w = rng.integers(-1, 2, (5, k, 3, 1)).astype(np.int8)
    packed = pack_ternary(w)
    assert packed.dtype == np.uint8 and packed.shape == (5, -(-3 * k // 4))
    np.testing.assert_array_equal(unpack_ternary(packed, w.shape), w)


def test_packed_layout_is_as_documented():
    w = np.array([1, -1, 0, 1, -1], dtype=np.int8).reshape(1, 5, 1, 1)
    # weight k in byte k//4 at bits 2*(k%4): codes 01, 10, 00, 01 | 10
    assert pack_ternary(w).tolist() == [[0b01_00_10_01, 0b10]]


def test_invalid_code_and_values_are_refused():
    with pytest.raises(TernaryWeightError, match="code 3"):
        unpack_ternary(np.array([[0b11]], np.uint8), (1, 1, 1, 1))
    with pytest.raises(TernaryWeightError):
        pack_ternary(np.array([[[[2]]]]))


@pytest.mark.parametrize("path", VECTOR_FILES, ids=lambda p: p.stem)
def test_reference_matches_torch(path):
    case, a = vectors.load(path)
    y = torch.nn.functional.conv2d(torch.from_numpy(a["x"]).double(), torch.from_numpy(a["w"]).double(),
                                   stride=case.stride, padding=case.pad, dilation=case.dilation, groups=case.group)
    y = y * torch.from_numpy(a["scale"]).double()[None, :, None, None] + torch.from_numpy(a["bias"]).double()[None, :, None, None]
    y = {"relu": torch.relu, "sigmoid": torch.sigmoid, "none": lambda t: t}[case.activation](y).float().numpy()
    if case.non_finite:  # a dense conv reads NaN/inf through zero taps too (0 * NaN = NaN); the op does not
        finite = np.isfinite(y)
        assert np.isfinite(a["y"]).sum() > finite.sum()
        y, a["y"] = y[finite], a["y"][finite]
    np.testing.assert_allclose(a["y"], y, rtol=1e-5, atol=1e-5)


def test_non_finite_inputs_zero_taps_read_nothing():
    """docs/ops/TernaryConv.md: zero taps read nothing; the others follow IEEE; relu(NaN) = NaN."""
    attrs = TernaryConvAttrs(kernel_shape=(1, 3), pads=(0, 1, 0, 1), activation="relu")
    x = np.array([1.0, np.nan, 2.0, np.inf, -np.inf, 3.0], np.float32).reshape(1, 1, 1, 6)
    w = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0], [-1, 0, 1]], np.int8).reshape(4, 1, 1, 3)
    y = ternary_conv_reference(x, pack_ternary(w), np.ones(4, np.float32), np.full(4, -0.5, np.float32), attrs)[0, :, 0]
    # taps of output p read x[p-1], x[p], x[p+1] (zero padded)
    np.testing.assert_array_equal(y[0], [np.nan, 2.5, np.nan, 0.0, np.inf, 0.0])  # x[p-1] + x[p+1]: skips x[p]
    np.testing.assert_array_equal(y[1], [0.0] * 6)  # an all-zero filter reads nothing: relu(bias)
    np.testing.assert_array_equal(y[2], [0.5, np.nan, np.nan, np.inf, np.nan, 0.0])  # x[p-1] + x[p]: +inf + -inf = NaN
    np.testing.assert_array_equal(y[3], [np.nan, 0.5, np.nan, 0.0, 0.0, np.inf])  # -x[p-1] + x[p+1]


INVALID_FILES = sorted((VECTOR_DIR / "invalid").glob("*.npz"))


def test_invalid_vectors_are_stored_and_current():
    assert {p.stem for p in INVALID_FILES} == set(vectors.INVALID_CASES)
    for path in INVALID_FILES:
        _, stored = vectors.load(path)
        np.testing.assert_array_equal(stored["w_packed"], vectors.invalid(path.stem)["w_packed"])


@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda p: p.stem)
def test_invalid_vectors_are_refused_by_check_packed_the_reference_and_onnx_reference(path):
    case, a = vectors.load(path)
    shape = (case.cout, case.cin // case.group, case.k, case.k)
    with pytest.raises(TernaryWeightError, match="invalid 2-bit code 3"):
        check_packed(a["w_packed"])
    with pytest.raises(TernaryWeightError, match="padding code" if "padding" in path.stem else r"\(row 1, code 7\)"):
        check_packed(a["w_packed"], shape)
    with pytest.raises(TernaryWeightError, match="invalid 2-bit code 3"):
        ternary_conv_reference(a["x"], a["w_packed"], a["scale"], a["bias"], case.attrs())


def _one_node_model(case, a, packed=True):
    register_schema()
    w = a["w_packed"] if packed else a["w"]
    node = make_node(["X", "W", "scale", "bias"], ["Y"], case.attrs())
    graph = helper.make_graph(
        [node], case.name,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", case.cin, case.h, case.w])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", case.cout, *a["y"].shape[2:]])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(a["scale"], "scale"),
         numpy_helper.from_array(a["bias"], "bias")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)])


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "int8"])
@pytest.mark.parametrize("path", VECTOR_FILES, ids=lambda p: p.stem)
def test_schema_checker_shape_inference_and_reference_evaluator(path, packed):
    case, a = vectors.load(path)
    model = _one_node_model(case, a, packed)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dims = [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim[1:]]
    assert dims == list(a["y"].shape[1:])
    out = ReferenceEvaluator(model, new_ops=[ReferenceTernaryConv]).run(None, {"X": a["x"]})[0]
    np.testing.assert_allclose(out, a["y"], rtol=1e-6, atol=1e-6)


def test_checker_rejects_a_missing_kernel_shape():
    register_schema()
    node = helper.make_node("TernaryConv", ["X", "W", "s", "b"], ["Y"], domain=DOMAIN)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1, 3, 3])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 1, 3, 3])],
                              [numpy_helper.from_array(np.zeros((1, 3), np.uint8), "W"),
                               numpy_helper.from_array(np.ones(1, np.float32), "s"),
                               numpy_helper.from_array(np.zeros(1, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)])
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model, full_check=True)


def test_reference_refuses_inconsistent_shapes():
    attrs = TernaryConvAttrs(kernel_shape=(3, 3))
    with pytest.raises(TernaryWeightError, match="do not agree"):
        ternary_conv_reference(np.zeros((1, 4, 5, 5), np.float32), np.zeros((2, 3, 3, 3), np.int8),
                               np.ones(2), np.zeros(2), attrs)
