"""Jetson/TensorRT path: CUDA kernel, IPluginV3 plugin, artifact files, engine builder, backend.

What runs where:
- Everywhere with nvcc: the kernel compiles (-c) for the Jetson/datacenter SMs this nvcc supports,
  and its host-side C API (geometry checks, packed row size) is exercised through ctypes.
- With TensorRT headers (downloaded from the PyPI package kernel-lens, which bundles TensorRT
  10.14 headers, into a cache folder; never into the repo): the plugin .cpp files pass
  g++ -fsyntax-only, libternary_trt.so builds from an exported artifact's own sources with its
  CMakeLists, and a host program drives the plugin through TensorRT's interfaces (no GPU needed).
- With a CUDA device only (marker gpu): the kernel runs on every tests/vectors/*.npz in float32 and
  float16 and is compared with the reference output.
- Without the tensorrt package (here): the backend and builder raise BackendUnavailable.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from exporters.tensorrt import JETSON_TARGETS, add_tensorrt_files
from exporters.tensorrt_commands import build_engine_cmd
from lbdeploy.errors import ArtifactError, BackendUnavailable, ConfigError, ExportError
from lbdeploy.ops.ternary_conv import ACTIVATIONS, KERNEL_TOLERANCE, packed_row_bytes, ternary_conv_reference
from lbdeploy.ops.vectors import load
from lbdeploy.tensorrt_build import BatchProfile, build_engine, profile_shapes

REPO = Path(__file__).resolve().parent.parent
KERNEL_CU = REPO / "lbdeploy" / "kernels" / "cuda" / "ternary_conv.cu"
PLUGIN_DIR = REPO / "lbdeploy" / "kernels" / "tensorrt"
HOST_CHECK = REPO / "tests" / "native" / "plugin_host_check.cpp"
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
        pytest.skip(f"this nvcc cannot target sm_{sm} (CUDA 13 dropped sm_72 and older; JetPack 5's CUDA 11.4 can)")
    _run([NVCC, "-c", "-O3", "-std=c++17", "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra,-Werror",
          "-gencode", f"arch=compute_{sm},code=sm_{sm}", KERNEL_CU, "-o", tmp_path / "ternary_conv.o"])
    assert (tmp_path / "ternary_conv.o").stat().st_size > 0


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
    kernel.lbd_ternary_conv_launch.argtypes = [ctypes.POINTER(Geometry), ctypes.c_int32] + [ctypes.c_void_p] * 6
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
    assert host_kernel.lbd_ternary_conv_launch(ctypes.byref(g), 0, None, None, None, None, None, None) == -1


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
        pytest.skip(f"TensorRT headers unavailable: `pip download {HEADER_PACKAGE}` failed: {proc.stderr.strip()[-300:]}")
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
    add_tensorrt_files(tmp_path, "jetson-orin")
    env = {**os.environ, "TENSORRT_ROOT": str(trt_include), "CUDACXX": str(NVCC)}
    _run(["bash", tmp_path / "tensorrt" / "build.sh"], env=env, timeout=600)
    library = tmp_path / "tensorrt" / "libternary_trt.so"
    assert library.is_file()
    symbols = _run(["nm", "-D", "--defined-only", library]).stdout
    assert " T getCreators" in symbols and " T setLoggerFinder" in symbols
    checker = tmp_path / "plugin_host_check"
    _run(["g++", "-std=c++17", "-Wall", "-isystem", trt_include, "-isystem", _cuda_include(), HOST_CHECK, "-ldl",
          "-o", checker])
    result = _run([checker, library])
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


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_gpu_kernel_matches_vectors(gpu_kernel, path, dtype):
    cudart, kernel = gpu_kernel
    case, arrays = load(path)
    x = arrays["x"].astype(dtype)
    if dtype == np.float16:  # reference on the float16-rounded input; output rounded to float16 once
        expected = ternary_conv_reference(x.astype(np.float32), arrays["w_packed"], arrays["scale"], arrays["bias"],
                                          case.attrs())
        tolerance = {"rtol": 2e-3, "atol": 2e-3 * float(np.abs(expected).max() + 1)}
    else:
        expected, tolerance = arrays["y"], KERNEL_TOLERANCE
    device = _Device(cudart)
    try:
        y_ptr = device.upload(np.zeros(arrays["y"].shape, dtype))
        g = _geometry(case, arrays)
        status = kernel.lbd_ternary_conv_launch(
            ctypes.byref(g), 0 if dtype == np.float32 else 1, device.upload(x), device.upload(arrays["w_packed"]),
            device.upload(arrays["scale"].astype(np.float32)), device.upload(arrays["bias"].astype(np.float32)),
            y_ptr, None)
        assert status == 0
        assert cudart.cudaDeviceSynchronize() == 0
        y = device.download(y_ptr, arrays["y"].shape, dtype)
    finally:
        device.free()
    np.testing.assert_allclose(y.astype(np.float32), expected.astype(np.float32), **tolerance)


# ------------------------------------------------------------------------------- artifact files


@pytest.mark.parametrize("target, sm", [("jetson", 87), ("jetson-orin", 87)])
def test_add_tensorrt_files_writes_complete_folder(tmp_path, target, sm):
    fragment = add_tensorrt_files(tmp_path, target)["tensorrt"]
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


@pytest.mark.parametrize("target", ["jetson-xavier", "jetson-nano"])
def test_old_jetpack_boards_refuse_custom_ops_but_take_standard_ops(tmp_path, target):
    with pytest.raises(ExportError, match="TensorRT >= 10.3"):
        add_tensorrt_files(tmp_path, target)
    fragment = add_tensorrt_files(tmp_path, target, custom_ops=False)["tensorrt"]
    assert fragment["plugin"] is None and fragment["sources"] == []
    assert fragment["sm_arch"] == f"sm_{JETSON_TARGETS[target].sm}"


def test_unknown_jetson_target(tmp_path):
    with pytest.raises(ExportError, match="jetson-orin"):
        add_tensorrt_files(tmp_path, "jetson-tx2")


# ----------------------------------------------------------------------- engine builder + backend


def _trt_artifact(folder: Path) -> Path:
    fragment = add_tensorrt_files(folder, "jetson-orin")
    (folder / "manifest.json").write_text(json.dumps({"format": "lbdeploy-artifact", "target": "jetson", **fragment}))
    (folder / "model.onnx").write_bytes(b"")
    return folder


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
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        build_engine(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"target": "x86", "backend": "ort"}))
    with pytest.raises(ArtifactError, match="--target jetson"):
        build_engine(tmp_path)


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_build_engine_and_backend_need_tensorrt(tmp_path):
    artifact = _trt_artifact(tmp_path)
    with pytest.raises(BackendUnavailable, match="TensorRT Python package"):
        build_engine(artifact, fp16=True)
    from runtime.backends.tensorrt import TensorRTBackend

    with pytest.raises(BackendUnavailable, match="TensorRT Python package"):
        TensorRTBackend(artifact, json.loads((artifact / "manifest.json").read_text()))


def test_build_engine_command(tmp_path):
    runner = CliRunner()
    help_text = runner.invoke(build_engine_cmd, ["--help"]).output
    assert "Example:" in help_text and "--opt-batch" in help_text and "--workspace" in help_text
    result = runner.invoke(build_engine_cmd, [str(_trt_artifact(tmp_path)), "--min-batch", "4", "--max-batch", "2"])
    assert isinstance(result.exception, ConfigError)
