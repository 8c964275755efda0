"""Our ONNX Runtime custom-op library (libternary_ort.so) against the shared TernaryConv vectors.

Builds the host library once per session, then runs every tests/vectors/*.npz case as a one-node
model in ONNX Runtime with packed and unpacked weights, on the optimized path (each vector
variant this CPU runs) and on the reference path (LBDEPLOY_KERNEL is read when a session creates
its kernels). Also: non-constant W, rejected weights, the library's ELF architecture and the
aarch64 cross build.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
onnx = pytest.importorskip("onnx", reason="onnx is not installed")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lbdeploy.errors import KernelLibraryError  # noqa: E402
from lbdeploy.kernels.build import build_ort_library, elf_arch  # noqa: E402
from lbdeploy.kernels.elf import host_arch  # noqa: E402
from lbdeploy.ops.onnx_schema import make_node  # noqa: E402
from lbdeploy.ops.ternary_conv import DOMAIN, KERNEL_TOLERANCE, TernaryConvAttrs  # noqa: E402
from lbdeploy.ops.vectors import load  # noqa: E402

VECTORS = sorted((Path(__file__).parent / "vectors").glob("*.npz"))


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def _kernel_paths() -> list:
    flags = _cpu_flags()
    paths = ["optimized", "reference", "scalar"]
    if host_arch() == "x86_64":
        for name, flag in (("avx2", "avx2"), ("avx512", "avx512f")):
            paths.append(pytest.param(name, marks=pytest.mark.skipif(flag not in flags, reason=f"CPU lacks {flag}")))
    return paths


def _model(attrs: TernaryConvAttrs, x_shape, initializers: dict, w_input=None) -> bytes:
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x_shape))]
    if w_input is not None:
        inputs.append(helper.make_tensor_value_info("W", w_input, None))
    graph = helper.make_graph(
        [make_node(["X", "W", "scale", "bias"], ["Y"], attrs)], "ternary_conv", inputs,
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    return model.SerializeToString()


def _session(model: bytes, library: str) -> "ort.InferenceSession":
    from lbdeploy.runtime.backends.ort import session_options

    return ort.InferenceSession(model, session_options(2, library), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("weights", ["packed_uint8", "int8"])
@pytest.mark.parametrize("kernel_path", _kernel_paths())
@pytest.mark.parametrize("vector", VECTORS, ids=[p.stem for p in VECTORS])
def test_vector_matches_reference(library, monkeypatch, vector, kernel_path, weights):
    monkeypatch.setenv("LBDEPLOY_KERNEL", kernel_path)
    case, a = load(vector)
    w = a["w_packed"] if weights == "packed_uint8" else a["w"]
    session = _session(_model(case.attrs(), a["x"].shape, {"W": w, "scale": a["scale"], "bias": a["bias"]}), library)
    (y,) = session.run(None, {"X": a["x"]})
    assert y.shape == a["y"].shape
    np.testing.assert_allclose(y, a["y"], **KERNEL_TOLERANCE)


# Larger maps than the stored vectors, so every vector variant also runs its lane layout
# (used when the output has at least two rows per vector lane).
LARGE_CASES = {
    "64x64_pad1": dict(cin=12, cout=10, h=64, w=64, attrs=TernaryConvAttrs(kernel_shape=(3, 3), pads=(1, 1, 1, 1))),
    "stride2_dilation2_odd": dict(cin=6, cout=5, h=75, w=41, attrs=TernaryConvAttrs(
        kernel_shape=(3, 5), strides=(2, 3), pads=(2, 0, 1, 3), dilations=(2, 1), activation="relu")),
    "groups_2_sigmoid": dict(cin=8, cout=6, h=40, w=33, attrs=TernaryConvAttrs(
        kernel_shape=(3, 3), pads=(1, 1, 1, 1), group=2, activation="sigmoid")),
}


@pytest.mark.parametrize("kernel_path", _kernel_paths())
@pytest.mark.parametrize("name", sorted(LARGE_CASES))
def test_large_maps_match_numpy_reference(library, monkeypatch, name, kernel_path):
    from lbdeploy.ops.ternary_conv import pack_ternary, ternary_conv_reference

    monkeypatch.setenv("LBDEPLOY_KERNEL", kernel_path)
    spec = LARGE_CASES[name]
    attrs = spec["attrs"]
    rng = np.random.default_rng(len(name))
    x = rng.standard_normal((2, spec["cin"], spec["h"], spec["w"])).astype(np.float32)
    w = rng.integers(-1, 2, (spec["cout"], spec["cin"] // attrs.group, *attrs.kernel_shape)).astype(np.int8)
    scale = rng.uniform(0.5, 1.5, spec["cout"]).astype(np.float32)
    bias = rng.uniform(-0.5, 0.5, spec["cout"]).astype(np.float32)
    session = _session(_model(attrs, x.shape, {"W": pack_ternary(w), "scale": scale, "bias": bias}), library)
    (y,) = session.run(None, {"X": x})
    np.testing.assert_allclose(y, ternary_conv_reference(x, w, scale, bias, attrs), **KERNEL_TOLERANCE)


@pytest.mark.parametrize("weights", ["packed_uint8", "int8"])
def test_non_constant_weights(library, weights):
    case, a = load(next(p for p in VECTORS if p.stem == "stride2"))
    w = a["w_packed"] if weights == "packed_uint8" else a["w"]
    elem = TensorProto.UINT8 if weights == "packed_uint8" else TensorProto.INT8
    session = _session(_model(case.attrs(), a["x"].shape, {"scale": a["scale"], "bias": a["bias"]}, w_input=elem), library)
    (y,) = session.run(None, {"X": a["x"], "W": w})
    np.testing.assert_allclose(y, a["y"], **KERNEL_TOLERANCE)
    # New weights on the next run are used, not a cached copy of the first ones.
    (y_zero,) = session.run(None, {"X": a["x"], "W": np.zeros_like(w)})
    np.testing.assert_allclose(y_zero, np.broadcast_to(a["bias"][None, :, None, None], y.shape), **KERNEL_TOLERANCE)


def _corrupted(packed: np.ndarray) -> np.ndarray:
    bad = packed.copy()
    bad[1, 0] |= 0b11 << 2  # weight 1 of output channel 1 -> invalid code 3
    return bad


def test_invalid_code_3_rejected_for_constant_weights(library):
    case, a = load(next(p for p in VECTORS if p.stem == "basic_3x3"))
    model = _model(case.attrs(), a["x"].shape, {"W": _corrupted(a["w_packed"]), "scale": a["scale"], "bias": a["bias"]})
    with pytest.raises(Exception, match="invalid 2-bit code 3"):
        _session(model, library).run(None, {"X": a["x"]})


INVALID = sorted((Path(__file__).parent / "vectors" / "invalid").glob("*.npz"))


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_shared_invalid_weights_rejected(library, path):
    """The shared invalid-weights vectors: code 3 in a weight, and code 3 in the padding past K."""
    case, a = load(path)
    model = _model(case.attrs(), a["x"].shape, {"W": a["w_packed"], "scale": a["scale"], "bias": a["bias"]})
    with pytest.raises(Exception, match="invalid 2-bit code 3"):
        _session(model, library).run(None, {"X": a["x"]})


def test_invalid_code_3_rejected_for_runtime_weights(library):
    case, a = load(next(p for p in VECTORS if p.stem == "basic_3x3"))
    model = _model(case.attrs(), a["x"].shape, {"scale": a["scale"], "bias": a["bias"]}, w_input=TensorProto.UINT8)
    session = _session(model, library)
    with pytest.raises(Exception, match="invalid 2-bit code 3"):
        session.run(None, {"X": a["x"], "W": _corrupted(a["w_packed"])})


def test_input_channels_must_match_packed_weights(library):
    case, a = load(next(p for p in VECTORS if p.stem == "basic_3x3"))
    session = _session(_model(case.attrs(), (1, 8, 8, 8), {"W": a["w_packed"], "scale": a["scale"], "bias": a["bias"]}), library)
    with pytest.raises(Exception, match="bytes per output channel"):
        session.run(None, {"X": np.zeros((1, 8, 8, 8), np.float32)})


def test_library_targets_this_machine(library):
    assert elf_arch(library) == host_arch()


def test_elf_arch_rejects_non_elf(tmp_path):
    path = tmp_path / "not_a_library.so"
    path.write_bytes(b"hello, this is text")
    with pytest.raises(KernelLibraryError, match="not an ELF"):
        elf_arch(path)


@pytest.mark.skipif(host_arch() != "x86_64", reason="the cross build is tested from x86-64 hosts")
@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None,
                    reason="aarch64 cross compiler absent (apt-get install g++-aarch64-linux-gnu)")
def test_aarch64_cross_build(tmp_path):
    path = build_ort_library(arch="aarch64", out_dir=tmp_path)
    assert path == tmp_path / "libternary_ort.so"
    assert elf_arch(path) == "aarch64"


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(KernelLibraryError, match="supported"):
        build_ort_library(arch="sparc")


def test_the_kernel_cache_lock_holds_other_processes_back(tmp_path):
    """Parallel exports (or test workers) wait for one build instead of compiling side by side."""
    import subprocess
    import sys

    from lbdeploy.kernels.locking import cache_lock

    probe = [sys.executable, "-c", "import fcntl, sys; fcntl.flock(open(sys.argv[1], 'a'), fcntl.LOCK_EX | fcntl.LOCK_NB)",
             str(tmp_path / "x86_64-key.lock")]
    with cache_lock(tmp_path / "x86_64-key"):
        held = subprocess.run(probe, capture_output=True, text=True, timeout=60)
        assert held.returncode != 0 and "BlockingIOError" in held.stderr
    assert subprocess.run(probe, capture_output=True, timeout=60).returncode == 0  # released
