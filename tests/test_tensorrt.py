"""Jetson/TensorRT path: CUDA kernel, IPluginV3 plugin, artifact files, engine builder, backend.

What runs where:
- Everywhere with nvcc: the kernel compiles (-c) for the Jetson/datacenter SMs this nvcc supports,
  and its host-side C API (geometry checks, packed row size) is exercised through ctypes.
- With the legacy kit (scripts/cuda-legacy-kit.sh: clang + CUDA 11.8 headers and ptxas from PyPI):
  the kernel's device code compiles for Xavier's sm_72, which CUDA 13 dropped.
- With TensorRT headers (downloaded from the PyPI package kernel-lens, which bundles TensorRT
  10.14 headers, into a cache folder; never into the repo): the plugin .cpp files pass
  g++ -fsyntax-only, libternary_trt.so builds from an exported artifact's own sources with its
  CMakeLists, and a host program drives the plugin through TensorRT's interfaces (no GPU needed).
- With g++ (C++20): the CUDA kernel's own source is compiled against a small CPU stand-in for the
  CUDA runtime (tests/native/cuda_emulation: one std::thread per CUDA thread, __syncthreads as a
  barrier) and run on every tests/vectors/*.npz in float32 and float16.
- With a CUDA device only (marker gpu): the same comparison on the GPU, through ctypes.
- Without the tensorrt package (here): the backend and builder raise BackendUnavailable.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lbdeploy.commands.tensorrt import build_engine_cmd
from lbdeploy.exporters.tensorrt import add_tensorrt_files, check_tensorrt_target, weight_words
from lbdeploy.exporters.tensorrt_engine import BatchProfile, build_engine, profile_shapes
from lbdeploy.errors import ArtifactError, BackendUnavailable, ConfigError, ExportError
from lbdeploy.ops.onnx_schema import make_node
from lbdeploy.ops.ternary_conv import (ACTIVATIONS, KERNEL_TOLERANCE, TernaryConvAttrs, pack_ternary, packed_row_bytes,
                                       ternary_conv_reference, unpack_ternary)
from lbdeploy.ops.vectors import load
from lbdeploy.targets import TARGETS, get_target
from runtime_artifacts import pool_manifest, pool_model, write_artifact

REPO = Path(__file__).resolve().parent.parent
KERNEL_CU = REPO / "lbdeploy" / "kernels" / "cuda" / "ternary_conv.cu"
PLUGIN_DIR = REPO / "lbdeploy" / "kernels" / "tensorrt"
EMULATION = REPO / "tests" / "native"
HOST_CHECK = EMULATION / "plugin_host_check.cpp"
VECTORS = sorted((REPO / "tests" / "vectors").glob("*.npz"))
HEADER_PACKAGE = "kernel-lens==2.0.1"  # bundles TensorRT 10.14 headers under kernel_lens/include/tensorrt
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _nvcc() -> Path | None:
    found = shutil.which("nvcc")
    default = Path("/usr/local/cuda/bin/nvcc")
    return Path(found) if found else (default if default.exists() else None)


NVCC = _nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) not installed")


def _cuda_home() -> Path:
    """The CUDA toolkit folder (holding include/cuda_runtime_api.h); nvcc may be a wrapper script elsewhere."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), NVCC.resolve().parent.parent,
                  "/usr/local/cuda"]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "include" / "cuda_runtime_api.h").is_file():
            return Path(candidate)
    pytest.skip("CUDA headers (cuda_runtime_api.h) not found; set CUDA_HOME")


def _cuda_include() -> Path:
    return _cuda_home() / "include"


def _run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    """Run a build command; fail the test with its output when it fails."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


# ---------------------------------------------------------------------------------------- kernel


@needs_nvcc
@pytest.mark.parametrize("sm", [72, 87, 90])
def test_kernel_compiles_for_sm(sm, tmp_path):
    arches = subprocess.run([NVCC, "--list-gpu-arch"], capture_output=True, text=True).stdout.split()
    if f"compute_{sm}" not in arches:
        pytest.skip(f"this nvcc cannot target sm_{sm} (CUDA 13 dropped sm_72 and older); "
                    "test_kernel_compiles_for_jetson_xavier_sm72_with_the_legacy_kit covers sm_72")
    _run([NVCC, "-c", "-O3", "-std=c++17", "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra,-Werror",
          "-gencode", f"arch=compute_{sm},code=sm_{sm}", KERNEL_CU, "-o", tmp_path / "ternary_conv.o"])
    assert (tmp_path / "ternary_conv.o").stat().st_size > 0


LEGACY_KIT_SCRIPT = REPO / "scripts" / "cuda-legacy-kit.sh"


@pytest.fixture(scope="session")
def legacy_cuda_kit() -> Path:
    """clang + CUDA 11.8 headers and ptxas (scripts/cuda-legacy-kit.sh, built once and cached).

    Skips with the reason when it cannot be built here; fails instead under
    LBDEPLOY_REQUIRE_CUDA_KIT=1 (CI).
    """
    done = subprocess.run(["bash", str(LEGACY_KIT_SCRIPT)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        reason = f"legacy CUDA kit unavailable (exit {done.returncode}): {' | '.join(done.stderr.splitlines()[-2:])}"
        if os.environ.get("LBDEPLOY_REQUIRE_CUDA_KIT") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return Path(done.stdout.strip().splitlines()[-1])


def test_kernel_compiles_for_jetson_xavier_sm72_with_the_legacy_kit(legacy_cuda_kit, tmp_path):
    """CUDA 13 cannot target Xavier (sm_72, JetPack 5); clang + CUDA 11.8's ptxas can."""
    kit = legacy_cuda_kit
    ptx, cubin = tmp_path / "ternary_conv.ptx", tmp_path / "ternary_conv.cubin"
    _run(["clang++-14", "-x", "cuda", "--cuda-gpu-arch=sm_72", f"--cuda-path={kit}", "--cuda-device-only", "-S",
          "-O3", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-cuda-version", "-idirafter", kit / "stub",
          KERNEL_CU, "-o", ptx])
    text = ptx.read_text()
    assert ".target sm_72" in text
    # the conv for float32 and for float16 (every stride), and the tap lists
    assert len(re.findall(r"\.entry \S*ternary_conv_kernel", text)) == 2
    assert len(re.findall(r"\.entry \S*build_tap_lists", text)) == 1
    _run([kit / "bin" / "ptxas", "-arch=sm_72", ptx, "-o", cubin])
    assert cubin.stat().st_size > 0


class Geometry(ctypes.Structure):
    """Mirror of LbdTernaryConvGeometry in ternary_conv.cuh."""

    _fields_ = [(name, ctypes.c_int32) for name in (
        "n", "c", "h", "w", "cout", "oh", "ow", "kh", "kw", "stride_h", "stride_w", "pad_top", "pad_left",
        "dilation_h", "dilation_w", "group", "activation")]


def _geometry(case, arrays) -> Geometry:
    n, c, h, w = arrays["x"].shape
    _, cout, oh, ow = arrays["y"].shape
    return Geometry(n, c, h, w, cout, oh, ow, case.k, case.k, case.stride, case.stride, case.pad, case.pad,
                    case.dilation, case.dilation, case.group, ACTIVATIONS.index(case.activation))


def _kernel_library(out_dir: Path, arch: str) -> ctypes.CDLL:
    """Build the kernel alone as a shared library (shared cudart) and load it with ctypes."""
    lib = out_dir / f"libternary_cuda_{arch.replace('=', '_').replace(',', '_')}.so"
    _run([NVCC, "-shared", "-Xcompiler", "-fPIC", "-cudart", "shared", "-O3", "-std=c++17", arch, KERNEL_CU,
          "-o", lib])
    kernel = ctypes.CDLL(str(lib))
    kernel.lbd_ternary_conv_check_geometry.restype = ctypes.c_char_p
    kernel.lbd_ternary_conv_check_geometry.argtypes = [ctypes.POINTER(Geometry)]
    kernel.lbd_ternary_conv_packed_row_bytes.argtypes = [ctypes.POINTER(Geometry)]
    kernel.lbd_ternary_conv_launch.argtypes = [ctypes.POINTER(Geometry), ctypes.c_int32, ctypes.c_void_p,
                                               ctypes.c_void_p, ctypes.c_int32] + [ctypes.c_void_p] * 4
    return kernel


@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory):
    if NVCC is None:
        pytest.skip("nvcc (CUDA toolkit) not installed")
    return _kernel_library(tmp_path_factory.mktemp("kernel"), "-gencode=arch=compute_87,code=sm_87")


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_kernel_host_api_accepts_every_vector(host_kernel, path):
    case, arrays = load(path)
    g = _geometry(case, arrays)
    assert host_kernel.lbd_ternary_conv_check_geometry(ctypes.byref(g)) is None
    row = host_kernel.lbd_ternary_conv_packed_row_bytes(ctypes.byref(g))
    assert row == packed_row_bytes(arrays["w"][0].size) == arrays["w_packed"].shape[1]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"group": 3}, b"group must be >= 1 and divide both c and cout"),
        ({"stride_h": 0}, b"kernel_shape, strides and dilations must be >= 1"),
        ({"activation": 7}, b"activation must be"),
        ({"oh": 0}, b"must be >= 1"),
        ({"dilation_h": 200, "dilation_w": 200}, b"shared-memory budget"),
    ],
)
def test_kernel_host_api_rejects_bad_geometry(host_kernel, change, message):
    case, arrays = load(VECTORS[0])
    g = _geometry(case, arrays)
    for field, value in change.items():
        setattr(g, field, value)
    reason = host_kernel.lbd_ternary_conv_check_geometry(ctypes.byref(g))
    assert reason is not None and message in reason
    assert host_kernel.lbd_ternary_conv_launch(ctypes.byref(g), 0, None, None, 1 << 20, None, None, None, None) == -1


def test_kernel_launch_rejects_short_weight_rows(host_kernel):
    case, arrays = load(VECTORS[0])
    g = _geometry(case, arrays)
    short = arrays["w_packed"].shape[1] - 1
    assert host_kernel.lbd_ternary_conv_launch(ctypes.byref(g), 0, None, None, short, None, None, None, None) == -1
    assert host_kernel.lbd_ternary_conv_launch(ctypes.byref(g), 5, None, None, short + 1, None, None, None, None) == -1


# -------------------------------------------------------------------------------- plugin (headers)


def _header_cache() -> Path:
    base = os.environ.get("LBDEPLOY_CACHE")
    return (Path(base) if base else REPO / ".cache") / "trt-headers"


@pytest.fixture(scope="session")
def trt_include() -> Path:
    """A folder with TensorRT's NvInferRuntime.h: $TENSORRT_INCLUDE_DIR, or kernel-lens's copy in a cache."""
    if os.environ.get("TENSORRT_INCLUDE_DIR"):
        return Path(os.environ["TENSORRT_INCLUDE_DIR"])
    include = _header_cache() / "include"
    if (include / "NvInferRuntime.h").is_file():
        return include
    download = _header_cache() / "wheel"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", HEADER_PACKAGE, "-d", str(download)],
        capture_output=True, text=True, timeout=300,
    )
    wheels = sorted(download.glob("kernel_lens-*.whl"))
    if proc.returncode != 0 or not wheels:
        reason = proc.stderr.strip()[-300:]
        pytest.skip(f"TensorRT headers unavailable: `pip download {HEADER_PACKAGE}` failed: {reason}")
    prefix = "kernel_lens/include/tensorrt/"
    include.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[-1]) as wheel:
        for member in wheel.namelist():
            if member.startswith(prefix) and member.endswith(".h"):
                (include / member[len(prefix):]).write_bytes(wheel.read(member))
    shutil.rmtree(download, ignore_errors=True)
    if not (include / "NvInferRuntime.h").is_file():
        pytest.skip(f"{HEADER_PACKAGE} no longer bundles TensorRT headers under {prefix}")
    return include


@needs_nvcc
@pytest.mark.parametrize("source", ["ternary_conv_plugin.cpp", "plugin_library.cpp"])
def test_plugin_sources_compile_against_tensorrt_headers(trt_include, source):
    _run(["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-isystem", trt_include,
          "-isystem", _cuda_include(), PLUGIN_DIR / source])


@needs_nvcc
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_artifact_sources_build_plugin_that_registers_with_tensorrt_interfaces(trt_include, tmp_path):
    """Export the Orin folder, build it with its own build.sh/CMakeLists, then drive the plugin on the host."""
    _write_ternary_model(tmp_path)
    add_tensorrt_files(tmp_path, get_target("jetson-orin"))
    env = {**os.environ, "TENSORRT_ROOT": str(trt_include), "CUDACXX": str(NVCC)}
    _run(["bash", tmp_path / "tensorrt" / "build.sh"], env=env, timeout=600)
    library = tmp_path / "tensorrt" / "libternary_trt.so"
    assert library.is_file()
    symbols = _run(["nm", "-D", "--defined-only", library]).stdout
    assert " T getCreators" in symbols and " T setLoggerFinder" in symbols
    checker = tmp_path / "plugin_host_check"
    _run(["g++", "-std=c++17", "-Wall", "-isystem", trt_include, "-isystem", _cuda_include(), HOST_CHECK, "-ldl",
          "-o", checker])
    result = _run([checker, library, "1" if _cuda_runtime() is not None else "0"])
    assert "plugin host check passed" in result.stdout


# ------------------------------------------------------------------------------------ GPU numerics


def _cuda_runtime() -> ctypes.CDLL | None:
    """libcudart with at least one device, else None."""
    if NVCC is None:
        return None
    lib_dir = _cuda_home()
    candidates = sorted((lib_dir / "lib64").glob("libcudart.so*")) + sorted((lib_dir / "lib").glob("libcudart.so*"))
    if not candidates:
        return None
    cudart = ctypes.CDLL(str(candidates[0]), mode=ctypes.RTLD_GLOBAL)
    count = ctypes.c_int(0)
    if cudart.cudaGetDeviceCount(ctypes.byref(count)) != 0 or count.value < 1:
        return None
    return cudart


class _Device:
    """Minimal device-memory helper over libcudart for the kernel harness."""

    def __init__(self, cudart):
        self.cudart = cudart
        self.pointers = []

    def upload(self, array: np.ndarray) -> ctypes.c_void_p:
        array = np.ascontiguousarray(array)
        ptr = ctypes.c_void_p()
        assert self.cudart.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(array.nbytes, 1))) == 0
        self.pointers.append(ptr)
        assert self.cudart.cudaMemcpy(ptr, array.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(array.nbytes), 1) == 0
        return ptr

    def download(self, ptr, shape, dtype) -> np.ndarray:
        out = np.empty(shape, dtype=dtype)
        assert self.cudart.cudaMemcpy(out.ctypes.data_as(ctypes.c_void_p), ptr, ctypes.c_size_t(out.nbytes), 2) == 0
        return out

    def free(self):
        for ptr in self.pointers:
            self.cudart.cudaFree(ptr)


@pytest.fixture(scope="module")
def gpu_kernel(tmp_path_factory):
    cudart = _cuda_runtime()
    if cudart is None:
        pytest.skip("no CUDA device")
    return cudart, _kernel_library(tmp_path_factory.mktemp("gpu_kernel"), "-arch=native")


def _expected(case, arrays, dtype):
    """Reference output and tolerance for running a vector in `dtype`."""
    if dtype == np.float32:
        return arrays["y"], KERNEL_TOLERANCE
    # float16: reference on the float16-rounded input; the kernel rounds its float32 sum to float16 once.
    x = arrays["x"].astype(np.float16).astype(np.float32)
    expected = ternary_conv_reference(x, arrays["w_packed"], arrays["scale"], arrays["bias"], case.attrs())
    finite = np.abs(expected[np.isfinite(expected)])  # NaN/inf outputs are compared as NaN/inf
    return expected, {"rtol": 2e-3, "atol": 2e-3 * float((finite.max() if finite.size else 0.0) + 1)}


def _weight_rows(path: Path, arrays) -> tuple[np.ndarray, int]:
    """Odd vectors pass int32 word rows (what TensorRT hands the plugin), even ones the plain packed bytes."""
    if VECTORS.index(path) % 2:
        words = weight_words(arrays["w_packed"])
        return words, 4 * words.shape[1]
    return arrays["w_packed"], arrays["w_packed"].shape[1]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_gpu_kernel_matches_vectors(gpu_kernel, path, dtype):
    cudart, kernel = gpu_kernel
    case, arrays = load(path)
    w_rows, row_stride = _weight_rows(path, arrays)
    device = _Device(cudart)
    try:
        y_ptr = device.upload(np.zeros(arrays["y"].shape, dtype))
        g = _geometry(case, arrays)
        status = kernel.lbd_ternary_conv_launch(
            ctypes.byref(g), 0 if dtype == np.float32 else 1, device.upload(arrays["x"].astype(dtype)),
            device.upload(w_rows), row_stride, device.upload(arrays["scale"].astype(np.float32)),
            device.upload(arrays["bias"].astype(np.float32)), y_ptr, None)
        assert status == 0
        assert cudart.cudaDeviceSynchronize() == 0
        y = device.download(y_ptr, arrays["y"].shape, dtype)
    finally:
        device.free()
    expected, tolerance = _expected(case, arrays, dtype)
    np.testing.assert_allclose(y.astype(np.float32), expected.astype(np.float32), **tolerance)


# ---------------------------------------------------------------------- kernel on the CPU (emulated)


@pytest.fixture(scope="module")
def emulated_kernel(tmp_path_factory) -> Path:
    """The real ternary_conv.cu compiled with g++ against tests/native/cuda_emulation (threads + barrier)."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed")
    folder = tmp_path_factory.mktemp("emulated")
    source, launches = re.subn(r"(\w+(?:<\w+>)?)<<<([^>]*)>>>\(", r"emulateLaunch(\2, \1, ", KERNEL_CU.read_text())
    assert launches == 2, "expected two kernel<<<...>>> launches (tap lists, conv) in ternary_conv.cu"
    (folder / "ternary_conv_emulated.cu").write_text(source)
    program = folder / "kernel_cpu_emulation"
    _run(["g++", "-std=c++20", "-O2", "-pthread", "-I", EMULATION / "cuda_emulation", "-I", KERNEL_CU.parent,
          "-I", folder, EMULATION / "kernel_cpu_emulation.cpp", "-o", program])
    return program


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_cuda_kernel_source_matches_vectors_on_cpu_emulation(emulated_kernel, path, dtype, tmp_path):
    """The CUDA kernel's own source, run block by block on CPU threads, reproduces every vector."""
    case, arrays = load(path)
    w_rows, row_stride = _weight_rows(path, arrays)
    files = {"x": arrays["x"].astype(dtype), "w": np.ascontiguousarray(w_rows),
             "scale": arrays["scale"].astype(np.float32), "bias": arrays["bias"].astype(np.float32)}
    for name, array in files.items():
        array.tofile(tmp_path / f"{name}.bin")
    g = _geometry(case, arrays)
    numbers = [0 if dtype == np.float32 else 1, row_stride] + [getattr(g, name) for name, _ in Geometry._fields_]
    _run([emulated_kernel, *numbers, *(tmp_path / f"{name}.bin" for name in files), tmp_path / "y.bin"], timeout=120)
    y = np.fromfile(tmp_path / "y.bin", dtype=dtype).reshape(arrays["y"].shape)
    expected, tolerance = _expected(case, arrays, dtype)
    np.testing.assert_allclose(y.astype(np.float32), expected.astype(np.float32), **tolerance)


# Maps larger than one tile (512 positions, rows of up to 32 columns) and more than one block of 64 output
# channels: the shared vectors are all smaller. (name, x shape, cout, kernel, stride, pad, dilation, group)
LARGE_CASES = [
    ("tiles_3x3", (1, 6, 40, 70), 72, 3, 1, 1, 1, 1),   # 3 x 3 tiles, 2 channel blocks
    ("tiles_stride2", (1, 8, 45, 80), 16, 3, 2, 1, 1, 1),  # 2 row phases per tap column
    ("tiles_1x1", (2, 10, 20, 40), 70, 1, 1, 0, 1, 1),
    ("tiles_dilated_groups", (1, 8, 36, 36), 8, 3, 1, 2, 2, 2),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("name, x_shape, cout, k, stride, pad, dilation, group", LARGE_CASES,
                         ids=[c[0] for c in LARGE_CASES])
def test_cuda_kernel_source_tiles_large_maps_on_cpu_emulation(emulated_kernel, tmp_path, dtype, name, x_shape, cout,
                                                              k, stride, pad, dilation, group):
    rng = np.random.default_rng(len(name))
    attrs = TernaryConvAttrs((k, k), strides=(stride, stride), pads=(pad,) * 4, dilations=(dilation, dilation),
                             group=group, activation="relu")
    weights = _ternary_weights(rng, (cout, x_shape[1] // group, k, k))
    x = rng.standard_normal(x_shape).astype(np.float16).astype(np.float32)  # exact in both dtypes
    scale, bias = rng.uniform(0.5, 1.5, cout).astype(np.float32), rng.uniform(-1, 1, cout).astype(np.float32)
    packed = pack_ternary(weights)
    expected = ternary_conv_reference(x, packed, scale, bias, attrs)
    files = {"x": x.astype(dtype), "w": packed, "scale": scale, "bias": bias}
    for file, array in files.items():
        np.ascontiguousarray(array).tofile(tmp_path / f"{file}.bin")
    n, c, h, w = x_shape
    _, _, oh, ow = expected.shape
    numbers = [0 if dtype == np.float32 else 1, packed.shape[1], n, c, h, w, cout, oh, ow, k, k, stride, stride, pad,
               pad, dilation, dilation, group, ACTIVATIONS.index("relu")]
    _run([emulated_kernel, *numbers, *(tmp_path / f"{file}.bin" for file in files), tmp_path / "y.bin"], timeout=600)
    y = np.fromfile(tmp_path / "y.bin", dtype=dtype).reshape(expected.shape).astype(np.float32)
    tolerance = KERNEL_TOLERANCE if dtype == np.float32 else {"rtol": 2e-3, "atol": 2e-3 * (np.abs(expected).max() + 1)}
    np.testing.assert_allclose(y, expected, **tolerance)


# ------------------------------------------------------------------------------- artifact files


def _ternary_weights(rng, shape) -> np.ndarray:
    return rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=shape)


def _ternary_model():
    """image [N,3,16,16] -> TernaryConv (packed uint8 W, 3x3) -> TernaryConv (unpacked int8 W, 3x3 stride 2)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w1, w2 = _ternary_weights(rng, (8, 3, 3, 3)), _ternary_weights(rng, (6, 8, 3, 3))
    ones = lambda n: np.ones(n, np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(pack_ternary(w1), "w1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(ones(8), "s1"), numpy_helper.from_array(ones(8) * 0, "b1"),
             numpy_helper.from_array(ones(6), "s2"), numpy_helper.from_array(ones(6) * 0, "b2")]
    nodes = [make_node(["image", "w1", "s1", "b1"], ["hidden"], TernaryConvAttrs((3, 3), pads=(1, 1, 1, 1),
                                                                                 activation="relu"), name="tc1"),
             make_node(["hidden", "w2", "s2", "b2"], ["out"], TernaryConvAttrs((3, 3), strides=(2, 2),
                                                                              pads=(1, 1, 1, 1)), name="tc2")]
    graph = helper.make_graph(nodes, "ternary", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                               ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 6, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.lbdeploy", 1)])
    return model, {"w1": w1, "w2": w2}


def _write_ternary_model(folder: Path) -> dict:
    model, weights = _ternary_model()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    return weights


def test_weight_words_keep_packed_bytes_in_order():
    packed = np.arange(2 * 7, dtype=np.uint8).reshape(2, 7)
    words = weight_words(packed)
    assert words.dtype == np.dtype("<i4") and words.shape == (2, 2)
    as_bytes = words.view(np.uint8).reshape(2, 8)
    assert (as_bytes[:, :7] == packed).all() and (as_bytes[:, 7] == 0).all()


def test_tensorrt_onnx_carries_the_same_ternary_weights_as_int32_words(tmp_path):
    import onnx
    from onnx import numpy_helper

    weights = _write_ternary_model(tmp_path)
    fragment = add_tensorrt_files(tmp_path, get_target("jetson"))["tensorrt"]
    assert fragment["onnx"] == "tensorrt/model.onnx"
    model = onnx.load(str(tmp_path / fragment["onnx"]))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert {"w1", "w2"}.isdisjoint(inits)  # the byte/int8 originals are gone
    for node in model.graph.node:
        words = inits[node.input[1]]
        assert words.dtype == np.int32
        original = weights[node.name.replace("tc", "w")]
        row = packed_row_bytes(original[0].size)
        assert words.shape == (original.shape[0], -(-row // 4))
        # What the plugin does: read row o from byte o * 4 * words.shape[1], decode `row` bytes.
        rows = words.astype("<i4").view(np.uint8).reshape(original.shape[0], -1)[:, :row]
        np.testing.assert_array_equal(unpack_ternary(rows, original.shape), original)
    # model.onnx itself keeps the spec's W (ORT parity runs on it)
    assert {"w1", "w2"} <= {i.name for i in onnx.load(str(tmp_path / "model.onnx")).graph.initializer}


@pytest.mark.parametrize("target, sm", [("jetson", 87), ("jetson-orin", 87)])
def test_add_tensorrt_files_writes_complete_folder(tmp_path, target, sm):
    _write_ternary_model(tmp_path)
    fragment = add_tensorrt_files(tmp_path, get_target(target))["tensorrt"]
    folder = tmp_path / "tensorrt"
    assert fragment["sm_arch"] == f"sm_{sm}" and fragment["cuda_arch"] == sm
    assert fragment["tensorrt_range"] == ">=10.3"
    assert fragment["plugin"] == {"name": "TernaryConv", "version": "1", "namespace": "", "onnx_domain": "ai.lbdeploy",
                                  "library": "tensorrt/libternary_trt.so"}
    assert fragment["engine"] == "tensorrt/model.engine"
    expected = {f"tensorrt/src/cuda/{n}" for n in ("ternary_conv.cu", "ternary_conv.cuh")} | {
        f"tensorrt/src/tensorrt/{n}" for n in ("CMakeLists.txt", "build.sh", "plugin_library.cpp",
                                               "ternary_conv_plugin.cpp", "ternary_conv_plugin.h")}
    assert set(fragment["sources"]) == expected
    for rel in fragment["sources"]:
        original = REPO / "lbdeploy" / "kernels" / Path(rel).relative_to("tensorrt/src")
        assert (tmp_path / rel).read_bytes() == original.read_bytes()
    script = folder / "build.sh"
    assert os.access(script, os.X_OK)
    assert f"CUDA_ARCH:-{sm}" in script.read_text()
    assert fragment["build_script"] == "tensorrt/build.sh"
    assert any("build-engine" in step for step in fragment["next_steps"])
    json.dumps(fragment)  # the fragment goes into manifest.json


@pytest.mark.parametrize("target, jetpack", [("jetson-xavier", "JetPack 5"), ("jetson-nano", "JetPack 4")])
@pytest.mark.parametrize("custom_ops", [True, False])
def test_unsupported_jetpack_boards_refuse_tensorrt_and_say_what_instead(tmp_path, target, jetpack, custom_ops):
    _write_ternary_model(tmp_path)
    with pytest.raises(ExportError, match=f"{jetpack} is not supported") as refused:
        add_tensorrt_files(tmp_path, get_target(target), custom_ops=custom_ops)
    assert "--backend ort" in str(refused.value) and "Python 3.11" in str(refused.value)
    assert not (tmp_path / "tensorrt").exists()


def test_orin_takes_standard_ops_without_a_plugin(tmp_path):
    _write_ternary_model(tmp_path)
    fragment = add_tensorrt_files(tmp_path, get_target("jetson-orin"), custom_ops=False)["tensorrt"]
    assert fragment["plugin"] is None and fragment["sources"] == [] and fragment["onnx"] == "model.onnx"
    assert fragment["sm_arch"] == f"sm_{TARGETS['jetson-orin'].gpu.sm}" == "sm_87"
    assert fragment["tensorrt_range"] == ">=8.5" and fragment["build_script"] is None
    assert check_tensorrt_target(get_target("jetson")).sm == 87  # the exporter's early check, before any work


def test_unknown_jetson_target_or_missing_model(tmp_path):
    with pytest.raises(ExportError, match="rpi4' is not a Jetson with TensorRT; choose one of jetson-orin"):
        add_tensorrt_files(tmp_path, get_target("rpi4"))
    with pytest.raises(ExportError, match="model.onnx must be written"):
        add_tensorrt_files(tmp_path, get_target("jetson"))


# ----------------------------------------------------------------------- engine builder + backend


def _trt_artifact(folder: Path) -> Path:
    """A verified Jetson artifact: a small ONNX model, the TensorRT folder and a manifest hashing every file."""
    staging = folder / "staging"
    _write_ternary_model(staging)
    fragment = add_tensorrt_files(staging, get_target("jetson-orin"))
    files = [*fragment["tensorrt"]["sources"], fragment["tensorrt"]["onnx"]]
    manifest = {**pool_manifest(), "target": "jetson", "backend": "tensorrt", **fragment}
    return write_artifact(folder / "artifact", pool_model(), manifest,
                          extra_files={rel: (staging / rel).read_bytes() for rel in files})


@pytest.mark.parametrize("batch", [(2, 1, 4), (0, 1, 1), (1, 4, 2)])
def test_batch_profile_must_be_ordered(batch):
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        BatchProfile(*batch)


def test_profile_shapes():
    assert profile_shapes("image", (-1, 3, 64, 48), BatchProfile(1, 2, 8)) == ((1, 3, 64, 48), (2, 3, 64, 48),
                                                                                 (8, 3, 64, 48))
    assert profile_shapes("image", (4, 3, 8, 8), BatchProfile(4, 4, 4))[1] == (4, 3, 8, 8)
    with pytest.raises(ConfigError, match="fixes the batch"):
        profile_shapes("image", (1, 3, 8, 8), BatchProfile(1, 2, 4))
    with pytest.raises(ConfigError, match="dynamic dimensions"):
        profile_shapes("image", (-1, 3, -1, -1), BatchProfile())


def test_build_engine_errors_before_tensorrt(tmp_path):
    with pytest.raises(ConfigError):
        build_engine(tmp_path, min_batch=4, opt_batch=2, max_batch=8)
    with pytest.raises(ConfigError, match="--workspace"):
        build_engine(tmp_path, workspace_mb=0)
    with pytest.raises(ArtifactError, match="no manifest.json"):
        build_engine(tmp_path)
    ort_artifact = write_artifact(tmp_path / "ort", pool_model(), pool_manifest())
    with pytest.raises(ArtifactError, match="--target jetson"):
        build_engine(ort_artifact)
    artifact = _trt_artifact(tmp_path / "trt")
    (artifact / "tensorrt" / "src" / "cuda" / "ternary_conv.cu").write_text("// modified")
    with pytest.raises(ArtifactError, match="was modified"):
        build_engine(artifact)


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_build_engine_and_backend_need_tensorrt(tmp_path):
    artifact = _trt_artifact(tmp_path)
    with pytest.raises(BackendUnavailable, match="TensorRT Python package"):
        build_engine(artifact, fp16=True)
    from lbdeploy.runtime.backends.tensorrt import TensorRTBackend

    with pytest.raises(BackendUnavailable, match="TensorRT Python package"):
        TensorRTBackend(artifact, json.loads((artifact / "manifest.json").read_text()))


def test_build_engine_command(tmp_path):
    runner = CliRunner()
    help_text = runner.invoke(build_engine_cmd, ["--help"]).output
    assert "Example:" in help_text and "--opt-batch" in help_text and "--workspace" in help_text
    result = runner.invoke(build_engine_cmd, [str(_trt_artifact(tmp_path)), "--min-batch", "4", "--max-batch", "2"])
    assert isinstance(result.exception, ConfigError)
