"""QTernaryConv in our ONNX Runtime library (libternary_ort.so) against the shared q_ vectors.

Every tests/vectors/quantized/q_*.npz case runs as a one-node model on every kernel path this CPU
runs (LBDEPLOY_KERNEL, read when a session creates its kernels, as for TernaryConv), in both
layouts (NCHW and channels-last NHWC), bit-exact to the reference; plus larger maps that use each
ISA's wide tiles, runtime weights, and the rejected inputs (each with INVALID_ARGUMENT).
"""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
onnx = pytest.importorskip("onnx", reason="onnx is not installed")
from onnx import TensorProto, helper  # noqa: E402
from test_ort_kernel import _cpu_flags, _session  # noqa: E402

from lbdeploy.kernels.elf import host_arch  # noqa: E402
from lbdeploy.ops.qternary_conv import MAX_K, QKERNEL_TOLERANCE, qternary_conv_reference  # noqa: E402
from lbdeploy.ops.qvectors import QVectorCase, generate, load_case, stored_paths, vector_model  # noqa: E402

VECTORS = stored_paths()


def _kernel_paths() -> list:
    """Every QTernaryConv path this CPU runs; the AVX-512 tiles need AVX-512BW."""
    flags = _cpu_flags()
    paths = ["optimized", "reference", "scalar"]
    if host_arch() == "x86_64":
        for name, flag in (("avx2", "avx2"), ("avx512", "avx512bw")):
            paths.append(pytest.param(name, marks=pytest.mark.skipif(flag not in flags, reason=f"CPU lacks {flag}")))
    return paths


def _run(library, case, arrays, x=None, layout="NCHW"):
    """Y of the vector's one-node model; with layout NHWC, X goes in and Y comes back channels-last
    and Y is returned as NCHW."""
    session = _session(vector_model(case, arrays, layout=layout).SerializeToString(), library)
    x = arrays["x"] if x is None else x
    if layout == "NHWC":
        (y,) = session.run(None, {"X": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})
        return np.ascontiguousarray(y.transpose(0, 3, 1, 2))
    (y,) = session.run(None, {"X": x})
    return y


def assert_within_one(y: np.ndarray, want: np.ndarray, name: str = "") -> None:
    """uint8 outputs equal up to QKERNEL_TOLERANCE (0: bit-exact, the one specified rounding)."""
    assert y.dtype == np.uint8 and y.shape == want.shape, name
    diff = np.abs(y.astype(np.int32) - want.astype(np.int32))
    assert diff.max() <= QKERNEL_TOLERANCE, f"{name}: {np.count_nonzero(diff)} outputs differ, max |diff| {diff.max()}"


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("kernel_path", _kernel_paths())
@pytest.mark.parametrize("vector", VECTORS, ids=[p.stem for p in VECTORS])
def test_vector_matches_reference(library, monkeypatch, vector, kernel_path, layout):
    monkeypatch.setenv("LBDEPLOY_KERNEL", kernel_path)
    case, a = load_case(vector)
    assert_within_one(_run(library, case, a, layout=layout), a["y"], case.name)


def test_rounding_repros_give_the_specified_values(library):
    # The two repros of the rounding spec (docs/ops/QTernaryConv.md): float32 m, one rounding of m*acc+b.
    for name, want in (("q_round_m_float32", [0, 1, 2, 2, 2, 3, 4, 4, 4]), ("q_round_fused_multiply_add", [101])):
        case, a = load_case(next(p for p in VECTORS if p.stem == name))
        assert _run(library, case, a).ravel().tolist() == want, name


# Maps large enough for every ISA's wide tiles and several work items, odd geometry included.
LARGE_CASES = (
    QVectorCase("q_large_64x64", n=1, cin=24, cout=12, h=64, w=64, x_zero_point=3, y_zero_point=120),
    QVectorCase("q_large_stride2_relu", n=2, cin=10, cout=9, h=45, w=71, stride=2, activation="relu",
                x_zero_point=250, y_zero_point=7),
    QVectorCase("q_large_groups_dilation", n=1, cin=16, cout=8, h=40, w=33, group=2, dilation=2, pad=2),
    QVectorCase("q_large_k5_many_channels", n=1, cin=40, cout=20, h=20, w=20, k=5, pad=2, density=0.9),
)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("kernel_path", _kernel_paths())
@pytest.mark.parametrize("case", LARGE_CASES, ids=[c.name for c in LARGE_CASES])
def test_large_maps_match_reference(library, monkeypatch, case, kernel_path, layout):
    monkeypatch.setenv("LBDEPLOY_KERNEL", kernel_path)
    a = generate(case)
    assert_within_one(_run(library, case, a, layout=layout), a["y"], case.name)


def _runtime_weight_model(case, a):
    model = vector_model(case, a)
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "W"))
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.UINT8, list(a["w_packed"].shape)))
    return model.SerializeToString()


def test_runtime_weights_are_used_on_every_run(library):
    case, a = load_case(next(p for p in VECTORS if p.stem == "q_stride2"))
    session = _session(_runtime_weight_model(case, a), library)
    (y,) = session.run(None, {"X": a["x"], "W": a["w_packed"]})
    assert_within_one(y, a["y"])
    zero = np.zeros_like(a["w_packed"])
    (y_zero,) = session.run(None, {"X": a["x"], "W": zero})
    want = qternary_conv_reference(a["x"], a["x_scale"], a["x_zero_point"], zero, a["scale"], a["bias"],
                                   a["y_scale"], a["y_zero_point"], case.attrs())
    assert_within_one(y_zero, want)
    assert not np.array_equal(y_zero, y)


def _corrupted(packed: np.ndarray) -> np.ndarray:
    bad = packed.copy()
    bad[1, 0] |= 0b11 << 2  # weight 1 of output channel 1 -> invalid code 3
    return bad


def test_invalid_code_3_rejected_for_constant_weights(library):
    case, a = load_case(next(p for p in VECTORS if p.stem == "q_basic_3x3"))
    a = {**a, "w_packed": _corrupted(a["w_packed"])}
    with pytest.raises(Exception, match="invalid 2-bit code 3"):
        _run(library, case, a)


def test_invalid_code_3_rejected_for_runtime_weights(library):
    case, a = load_case(next(p for p in VECTORS if p.stem == "q_basic_3x3"))
    session = _session(_runtime_weight_model(case, a), library)
    with pytest.raises(Exception, match="invalid 2-bit code 3"):
        session.run(None, {"X": a["x"], "W": _corrupted(a["w_packed"])})


def _worst_case_arrays(case: QVectorCase) -> dict:
    """Inputs of `case` without running the reference (all +1 weights, X = 255)."""
    w = np.ones((case.cout, case.cin, case.k, case.k), np.int8)
    from lbdeploy.ops.ternary_conv import pack_ternary

    f = np.float32
    return {"x": np.full((case.n, case.cin, case.h, case.w), 255, np.uint8), "x_scale": f(1), "x_zero_point": np.uint8(0),
            "w_packed": pack_ternary(w), "scale": np.ones(case.cout, f), "bias": np.zeros(case.cout, f),
            "y_scale": f(1), "y_zero_point": np.uint8(0)}


def test_k_above_the_limit_is_rejected(library):
    case = QVectorCase("too_large_k", n=1, cin=MAX_K + 1, cout=1, h=1, w=1, k=1, pad=0)
    with pytest.raises(Exception, match=f"K = C/group \\* kH \\* kW <= {MAX_K}"):
        _run(library, case, _worst_case_arrays(case))


def test_kernel_with_more_than_128_taps_is_rejected_as_invalid_argument(library):
    case = QVectorCase("too_many_taps", n=1, cin=1, cout=1, h=12, w=12, k=12, pad=0)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="kH \\* kW <= 128"):
        _run(library, case, _worst_case_arrays(case))


@pytest.mark.parametrize("name,value", [("y_scale", 0.0), ("y_scale", -0.5), ("y_scale", float("nan")),
                                        ("x_scale", float("inf")), ("scale", float("nan")), ("bias", float("nan")),
                                        ("y_scale", 1e-45)])
def test_degenerate_scales_are_invalid_arguments(library, name, value):
    # One behaviour on every backend (docs/ops/QTernaryConv.md): refused, never run. y_scale 1e-45
    # makes bias / y_scale overflow float32.
    case, a = load_case(next(p for p in VECTORS if p.stem == "q_relu"))
    a = {**a, name: np.full_like(a[name], value)}
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="must be finite"):
        _run(library, case, a)


def test_input_channel_count_may_change_between_runs(library):
    # Packed rows of 2 bytes fit 5 to 8 input channels of a 1x1 kernel: each run decodes its own K.
    case = QVectorCase("channels", n=1, cin=8, cout=6, h=9, w=9, k=1, pad=0)
    a = generate(case)
    model = vector_model(case, a)
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "C"
    session = _session(model.SerializeToString(), library)
    for channels in (8, 6, 8):
        x = a["x"][:, :channels]
        want = qternary_conv_reference(x, a["x_scale"], a["x_zero_point"], a["w_packed"], a["scale"], a["bias"],
                                       a["y_scale"], a["y_zero_point"], case.attrs())
        (y,) = session.run(None, {"X": np.ascontiguousarray(x)})
        assert_within_one(y, want, f"{channels} channels")
