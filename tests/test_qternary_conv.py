"""The QTernaryConv op spec: numpy reference vs stored q_ vectors, onnx.reference vs numpy, schema."""

from __future__ import annotations

import numpy as np
import pytest

from lbdeploy.errors import TernaryWeightError
from lbdeploy.ops.qternary_conv import INPUTS, MAX_K, OP_TYPE, OP_VERSION, accumulate, qternary_conv_reference
from lbdeploy.ops.qvectors import CASES, generate, inputs_of, load_case, stored_paths, vector_model
from lbdeploy.ops.ternary_conv import DOMAIN, TernaryConvAttrs

onnx = pytest.importorskip("onnx", reason="onnx is not installed")
from onnx import TensorProto  # noqa: E402

VECTORS = stored_paths()


def test_every_case_is_stored():
    assert [p.stem for p in VECTORS] == sorted(case.name for case in CASES)


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_stored_vector_equals_reference(path):
    case, stored = load_case(path)
    fresh = generate(case)
    assert set(fresh) - {"attrs"} == set(stored)
    for name, value in stored.items():
        np.testing.assert_array_equal(value, fresh[name], err_msg=name)
        assert value.dtype == fresh[name].dtype, name
    y = qternary_conv_reference(*inputs_of(stored), case.attrs())
    np.testing.assert_array_equal(y, stored["y"])


def _by_name(name):
    return load_case(next(p for p in VECTORS if p.stem == name))


def test_saturation_cases_hit_both_ends():
    _, a = _by_name("q_saturation")
    assert (a["y"] == 0).any() and (a["y"] == 255).any()


def test_worst_case_sums_are_the_largest_accepted():
    for name in ("q_worst_case_max_k", "q_worst_case_3x3"):
        case, a = _by_name(name)
        k = case.cin * case.k * case.k
        assert k <= MAX_K
        assert a["acc"].max() == 255 * k and a["acc"].min() == -255 * k
        assert (a["y"] == 100).all()
    case, _ = _by_name("q_worst_case_max_k")
    assert case.cin * case.k * case.k == MAX_K


def test_zero_point_pads_with_real_zero():
    # A constant input equal to x_zero_point is real 0 everywhere, padding included: all sums 0.
    attrs = TernaryConvAttrs(kernel_shape=(3, 3), pads=(1, 1, 1, 1))
    w = np.ones((2, 3, 3, 3), np.int8)
    acc = accumulate(np.full((1, 3, 4, 4), 77, np.uint8), np.uint8(77), w, attrs)
    assert not acc.any()
    # With zero point 0 the border taps read padding 0: a corner sees 4 of the 9 taps.
    acc = accumulate(np.full((1, 3, 4, 4), 10, np.uint8), np.uint8(0), w, attrs)
    assert acc[0, 0, 0, 0] == 3 * 4 * 10 and acc[0, 0, 1, 1] == 3 * 9 * 10


def test_round_half_to_even_and_relu():
    attrs = TernaryConvAttrs(kernel_shape=(1, 1))
    x = np.array([5, 7, 9], np.uint8).reshape(1, 1, 1, 3)
    w = np.ones((1, 1, 1, 1), np.int8)
    f = np.float32
    # v = 0.5 * (x - 4) = 0.5, 1.5, 2.5 -> ties to even 0, 2, 2; plus y_zero_point 10.
    y = qternary_conv_reference(x, f(0.5), np.uint8(4), w, f([1]), f([0]), f(1), np.uint8(10), attrs)
    assert y.ravel().tolist() == [10, 12, 12]
    relu = TernaryConvAttrs(kernel_shape=(1, 1), activation="relu")
    y = qternary_conv_reference(x, f(1), np.uint8(8), w, f([1]), f([0]), f(1), np.uint8(10), relu)
    assert y.ravel().tolist() == [10, 10, 11]  # -3 and -1 clamp to real 0, i.e. y_zero_point


def test_sigmoid_and_float_inputs_are_rejected():
    with pytest.raises(TernaryWeightError, match="activation"):
        qternary_conv_reference(np.zeros((1, 1, 2, 2), np.uint8), 1.0, np.uint8(0), np.ones((1, 1, 1, 1), np.int8),
                                [1.0], [0.0], 1.0, np.uint8(0), TernaryConvAttrs((1, 1), activation="sigmoid"))
    with pytest.raises(TernaryWeightError, match="uint8"):
        accumulate(np.zeros((1, 1, 2, 2), np.float32), np.uint8(0), np.ones((1, 1, 1, 1), np.int8),
                   TernaryConvAttrs((1, 1)))


def _model(case, a, symbolic_batch=False):
    return vector_model(case, a, "N" if symbolic_batch else None)


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_onnx_reference_matches_numpy(path):
    from onnx.reference import ReferenceEvaluator

    from lbdeploy.ops.qonnx_schema import ReferenceQTernaryConv

    case, a = load_case(path)
    (y,) = ReferenceEvaluator(_model(case, a), new_ops=[ReferenceQTernaryConv]).run(None, {"X": a["x"]})
    assert y.dtype == np.uint8
    np.testing.assert_array_equal(y, a["y"])


@pytest.mark.parametrize("name", ["q_stride2", "q_groups_4", "q_kernel_5x5_pad2", "q_dilation2_no_pad"])
def test_checker_full_check_and_shape_inference(name):
    case, a = _by_name(name)
    model = _model(case, a, symbolic_batch=True)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    y_info = inferred.graph.output[0]
    dims = y_info.type.tensor_type.shape.dim
    assert y_info.type.tensor_type.elem_type == TensorProto.UINT8
    assert dims[0].dim_param == "N"
    assert [d.dim_value for d in dims[1:]] == list(a["y"].shape[1:])


def test_schema_rejects_float_input():
    case, a = _by_name("q_basic_3x3")
    model = _model(case, a)
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    with pytest.raises((onnx.checker.ValidationError, onnx.shape_inference.InferenceError), match="T"):
        onnx.checker.check_model(model, full_check=True)


def test_registered_schema_names():
    from lbdeploy.ops.qonnx_schema import register_schema

    register_schema()
    schema = onnx.defs.get_schema(OP_TYPE, OP_VERSION, DOMAIN)
    assert [i.name for i in schema.inputs] == list(INPUTS)
    assert {"kernel_shape", "strides", "pads", "dilations", "group", "activation", "layout"} == set(schema.attributes)


def test_rounding_repros_follow_the_spec():
    # (a) m in float32 (just above 0.5: ties round up), (b) one rounding of m * acc + b (100.50195 -> 101).
    case, a = _by_name("q_round_m_float32")
    assert a["y"].ravel().tolist() == [0, 1, 2, 2, 2, 3, 4, 4, 4]
    case, a = _by_name("q_round_fused_multiply_add")
    assert a["y"].ravel().tolist() == [101]


def test_fused_multiply_add_rounds_once():
    from fractions import Fraction

    from lbdeploy.ops.qternary_conv import fused_multiply_add32

    rng = np.random.default_rng(3)
    m = rng.uniform(-2, 2, 400).astype(np.float32)
    acc = rng.integers(-(2**23), 2**23, 400)
    # b puts m * acc + b near a float32 midpoint, where rounding s = fl64(m * acc + b) again goes wrong.
    b = (np.round(-m.astype(np.float64) * acc) + 0.5 + rng.uniform(-1e-9, 1e-9, 400)).astype(np.float32)
    # Exact float32 midpoints in float64 plus a bias below float64's resolution there: a float64 sum
    # rounded again to float32 ties to even (12582914, 12582910); one rounding goes by the bias' sign.
    m = np.append(m, np.float32([1.5, 1.5]))
    acc = np.append(acc, [8388609, 8388607])
    b = np.append(b, np.float32([-(2.0**-31), 2.0**-31]))
    got = fused_multiply_add32(m, acc, b)
    assert got[-2:].tolist() == [12582913.0, 12582911.0]
    for mi, ai, bi, gi in zip(m, acc, b, got):
        exact = Fraction(float(mi)) * int(ai) + Fraction(float(bi))
        below = np.float32(float(exact))
        candidates = {np.nextafter(below, np.float32(-np.inf)), below, np.nextafter(below, np.float32(np.inf))}
        best = min(abs(Fraction(float(c)) - exact) for c in candidates)
        nearest = [c for c in candidates if abs(Fraction(float(c)) - exact) == best]
        if len(nearest) > 1:
            nearest = [c for c in nearest if not np.frombuffer(np.float32(c).tobytes(), np.uint32)[0] & 1]
        assert gi == nearest[0], (mi, ai, bi)


@pytest.mark.parametrize("name,value", [("y_scale", 0.0), ("y_scale", -1.0), ("y_scale", float("nan")),
                                        ("x_scale", float("inf")), ("scale", float("nan")), ("bias", float("nan"))])
def test_degenerate_scales_are_refused(name, value):
    from lbdeploy.errors import QuantizationError

    case, a = _by_name("q_relu")
    a = {**a, name: np.full_like(a[name], value)}
    with pytest.raises(QuantizationError, match="must be finite"):
        qternary_conv_reference(*inputs_of(a), case.attrs())


def test_nhwc_layout_is_the_transposed_op():
    from onnx.reference import ReferenceEvaluator

    from lbdeploy.ops.qonnx_schema import ReferenceQTernaryConv

    case, a = _by_name("q_stride2")
    model = vector_model(case, a, "N", layout="NHWC")
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N"
    assert [d.dim_value for d in dims[1:]] == [a["y"].shape[2], a["y"].shape[3], a["y"].shape[1]]
    x = np.ascontiguousarray(a["x"].transpose(0, 2, 3, 1))
    (y,) = ReferenceEvaluator(model, new_ops=[ReferenceQTernaryConv]).run(None, {"X": x})
    np.testing.assert_array_equal(y, a["y"].transpose(0, 2, 3, 1))
    with pytest.raises(TernaryWeightError, match="layout"):
        qternary_conv_reference(*inputs_of(a), case.attrs(), layout="NWHC")
