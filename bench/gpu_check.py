"""One lent GPU's check of the CUDA TernaryConv kernel, its TensorRT plugin and the TVM CUDA module.

    python bench/gpu_check.py --prepare [--inputs DIR]          # here: CPU, the project's venv
    python bench/gpu_check.py [--inputs DIR] [--json PATH]      # on the GPU machine (scripts/gpu-check.sh)
    python bench/gpu_check.py --dry-run [--json PATH]           # anywhere with nvcc: rehearse both on the CPU

The GPU machine has nvcc, PyTorch (CUDA) and numpy, but no network, no ONNX Runtime, no TVM and no
TensorRT. So the CPU-only parts are made beforehand by `--prepare` into DIR (default
.cache/gpu-check, carried to the GPU machine):
- references: every shared vector (tests/vectors) and one LBRN-S ternary layer per distinct shape
  (its real weights, a seeded input exactly representable in float16) run through ONNX Runtime with
  our CPU kernel library (the ORT reference), in float32 on the float16-rounded input;
- the PTX of a TVM module compiled for jetson-orin (a TernaryConv + MaxPool model);
- TensorRT's headers (only headers: the plugin links no TensorRT library).

On the GPU (`run`), with TF32 off for every reference conv:
1. the kernel (nvcc -arch=native) against the ORT reference on every vector and LBRN-S layer, in float32
   and float16; cuDNN float32 against the same references (the references themselves are right);
2. our kernel timed against cuDNN (float32, TF32, float16 NCHW and NHWC), each as CUDA graph replays
   of CALLS launches, at densities 0, 0.1, 0.5 and 1, for 128->128 3x3 at 64x64 and every other LBRN-S
   ternary shape;
3. the TVM module's PTX loaded by the driver (cuModuleLoadDataEx) for this GPU's architecture, and each
   kernel entry found in it;
4. the TensorRT plugin built for this GPU (its build.sh) and its enqueue driven directly
   (bench/gpu_check_plugin.cpp) with a real LBRN-S layer's weights: the first enqueue under CUDA graph
   capture, then eager, then the graph again, each against the ORT reference.
It writes one JSON file (--json, default .cache/gpu-check/report.json) and exits 0 when every check passed.

`--dry-run` rehearses everything without a GPU: prepares into a temporary folder (or --inputs),
compiles the kernel for sm_87 and checks every geometry, assembles the PTX with ptxas, builds the
plugin and its driver, and lists the timing plan; its JSON says what would run.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lbdeploy.ops.ternary_conv import KERNEL_TOLERANCE  # noqa: E402

KERNEL_CU = REPO / "lbdeploy" / "kernels" / "cuda" / "ternary_conv.cu"
PLUGIN_DIR = REPO / "lbdeploy" / "kernels" / "tensorrt"
PLUGIN_DRIVER = REPO / "bench" / "gpu_check_plugin.cpp"
VECTORS = sorted((REPO / "tests" / "vectors").glob("*.npz"))
DEFAULT_INPUTS = REPO / ".cache" / "gpu-check"
DENSITIES = (0.0, 0.1, 0.5, 1.0)
HEADLINE = (128, 128, 64, 64, 1)  # cin, cout, h, w, stride of the headline 3x3 layer
CALLS, REPLAYS, TRIALS = 20, 10, 5  # launches per captured graph, replays per timing, timings (median)
FP16_RTOL = 2e-3  # float16 output: one rounding of a float32 sum; atol scales with the output's magnitude
ACTIVATIONS = ("none", "relu", "sigmoid")


def geometry_fields(case: dict) -> list[int]:
    """The kernel's LbdTernaryConvGeometry fields of a case, in declaration order."""
    n, c, h, w = case["x_shape"]
    _, cout, oh, ow = case["y_shape"]
    (kh, kw), (sh, sw), pads, (dh, dw) = case["kernel"], case["strides"], case["pads"], case["dilations"]
    return [n, c, h, w, cout, oh, ow, kh, kw, sh, sw, pads[0], pads[1], dh, dw, case["group"],
            ACTIVATIONS.index(case["activation"])]


class Geometry(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in (
        "n", "c", "h", "w", "cout", "oh", "ow", "kh", "kw", "stride_h", "stride_w", "pad_top", "pad_left",
        "dilation_h", "dilation_w", "group", "activation")]


def conv_case(name, x_shape, cout, k, stride, pad, dilation=1, group=1, activation="none") -> dict:
    """A case record (JSON-able) for a square-kernel conv with symmetric pads."""
    n, _, h, w = x_shape
    oh = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    ow = (w + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    return {"name": name, "x_shape": list(x_shape), "y_shape": [n, cout, oh, ow], "kernel": [k, k],
            "strides": [stride, stride], "pads": [pad, pad, pad, pad], "dilations": [dilation, dilation],
            "group": group, "activation": activation}


# ------------------------------------------------------------------------------------------ prepare (CPU)


def lbrn_s_layers():
    """(name, module, input shape) of every TernaryConv2d in LBRN-S for a 1x3x256x256 image (CPU run)."""
    import torch

    from lbdeploy.models.registry import build_model
    from lbdeploy.models.ternary import TernaryConv2d

    model = build_model("lbrn-s").eval()
    shapes = {}

    def record(name):
        def hook(_module, inputs, _output) -> None:  # returns None: the layer's output is kept
            shapes.setdefault(name, tuple(inputs[0].shape))
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in model.named_modules() if isinstance(m, TernaryConv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, 256, 256))
    for hook in hooks:
        hook.remove()
    return [(name, m, shapes[name]) for name, m in model.named_modules() if name in shapes]


def ort_reference(case: dict, x: np.ndarray, w_packed: np.ndarray, scale, bias, library: Path) -> np.ndarray:
    """The case run as a one-node model in ONNX Runtime with our CPU kernel library."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from lbdeploy.ops.onnx_schema import make_node
    from lbdeploy.ops.ternary_conv import DOMAIN, OP_VERSION, TernaryConvAttrs

    attrs = TernaryConvAttrs(tuple(case["kernel"]), strides=tuple(case["strides"]), pads=tuple(case["pads"]),
                             dilations=tuple(case["dilations"]), group=case["group"], activation=case["activation"])
    inits = {"W": w_packed, "scale": scale.astype(np.float32), "bias": bias.astype(np.float32)}
    graph = helper.make_graph([make_node(["X", "W", "scale", "bias"], ["Y"], attrs)], "ternary_conv",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, OP_VERSION)])
    options = ort.SessionOptions()
    options.add_session_config_entry("session.force_spinning_stop", "1")
    options.register_custom_ops_library(str(library))
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"X": x})[0]


def write_case(folder: Path, case: dict, x16: np.ndarray, w_packed, scale, bias, library: Path) -> dict:
    """Stores a case's float16-exact input, weights, scale, bias and ORT reference; returns its record."""
    from lbdeploy.exporters.tensorrt import weight_words

    x = x16.astype(np.float32)
    y = ort_reference(case, x, w_packed, scale, bias, library)
    np.savez_compressed(folder / f"{case['name']}.npz", x16=x16, w_packed=w_packed, w_words=weight_words(w_packed),
                        scale=scale.astype(np.float32), bias=bias.astype(np.float32), y=y)
    return case


def prepare_tvm_ptx(folder: Path) -> dict:
    """The PTX (and kernel entry names) of a TVM module compiled for jetson-orin; why not, if it cannot be."""
    try:
        import onnx
        from onnx import helper

        from lbdeploy.exporters.tvm.compile import compile_artifact
        from lbdeploy.exporters.tvm.kernel_entries import embedded_ptx, entry_names
        from lbdeploy.ops.onnx_schema import make_node
        from lbdeploy.ops.ternary_conv import DOMAIN, OP_VERSION
        from lbdeploy.ops.vectors import load
        from lbdeploy.targets import get_target
    except ImportError as missing:
        return {"ok": False, "reason": f"TVM export unavailable here: {missing}"}
    case, arrays = load(REPO / "tests" / "vectors" / "relu.npz")
    nodes = [make_node(["x", "w", "scale", "bias"], ["t"], case.attrs()),
             helper.make_node("MaxPool", ["t"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    inits = [onnx.numpy_helper.from_array(arrays[k], n) for k, n in (("w_packed", "w"), ("scale", "scale"),
                                                                      ("bias", "bias"))]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                             list(arrays["x"].shape))],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, OP_VERSION)])
    with tempfile.TemporaryDirectory() as work:
        onnx.save(model, Path(work) / "model.onnx")
        try:
            fragment = compile_artifact(Path(work) / "model.onnx", get_target("jetson-orin"), Path(work) / "out")
        except Exception as err:  # noqa: BLE001 - any compile failure is reported, not fatal
            return {"ok": False, "reason": f"TVM compile for jetson-orin failed: {err}"}
        (ptx,) = embedded_ptx(Path(work) / "out" / fragment["tvm"]["module"])
    (folder / "tvm_module.ptx").write_text(ptx)
    return {"ok": True, "file": "tvm_module.ptx", "entries": entry_names(ptx)}


def trt_headers() -> Path | None:
    """A folder with TensorRT's headers: $TENSORRT_INCLUDE_DIR or the tests' cache (tests/test_tensorrt.py)."""
    candidates = [os.environ.get("TENSORRT_INCLUDE_DIR"),
                  str(Path(os.environ.get("LBDEPLOY_CACHE", REPO / ".cache")) / "trt-headers" / "include")]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "NvInferRuntime.h").is_file():
            return Path(candidate)
    return None


def prepare(folder: Path) -> dict:
    """Writes everything the GPU machine cannot make into `folder`; returns (and stores) its index."""
    from lbdeploy.kernels.build import build_ort_library
    from lbdeploy.ops.ternary_conv import pack_ternary
    from lbdeploy.ops.vectors import load

    folder.mkdir(parents=True, exist_ok=True)
    library = build_ort_library()
    index = {"vectors": [], "layers": [], "timing_shapes": [list(HEADLINE)]}
    for path in VECTORS:
        case, arrays = load(path)
        record = conv_case(path.stem, arrays["x"].shape, arrays["y"].shape[1], case.k, case.stride, case.pad,
                           case.dilation, case.group, case.activation)
        x16 = arrays["x"].astype(np.float16)  # NaN and inf survive; the reference runs on these values
        index["vectors"].append(write_case(folder, record, x16, arrays["w_packed"], arrays["scale"], arrays["bias"],
                                           library))
    seen = set()
    rng = np.random.RandomState(7)
    for name, module, x_shape in lbrn_s_layers():
        shape = (x_shape[1], module.out_channels, x_shape[2], x_shape[3], module.stride[0])
        if shape not in seen:
            seen.add(shape)
            index["timing_shapes"].append(list(shape))
            record = conv_case(f"lbrn_s.{name}", x_shape, module.out_channels, module.kernel_size[0],
                               module.stride[0], module.padding[0], module.dilation[0], module.groups)
            weights = module.weight.detach().cpu().numpy().astype(np.int8)
            x16 = rng.standard_normal(x_shape).astype(np.float16)
            scale = rng.uniform(0.5, 1.5, module.out_channels)
            bias = rng.uniform(-0.1, 0.1, module.out_channels)
            index["layers"].append(write_case(folder, record, x16, pack_ternary(weights), scale, bias, library))
    index["timing_shapes"] = sorted({tuple(s) for s in index["timing_shapes"]},
                                    key=lambda s: (s != HEADLINE, s))
    index["tvm"] = prepare_tvm_ptx(folder)
    headers = trt_headers()
    if headers is not None:
        shutil.copytree(headers, folder / "trt-include", dirs_exist_ok=True)
    index["trt_headers"] = "trt-include" if headers is not None else None
    (folder / "index.json").write_text(json.dumps(index, indent=1))
    return index


# ------------------------------------------------------------------------------------------- GPU parts


def build_kernel(folder: Path, arch: str) -> ctypes.CDLL:
    """nvcc the kernel into a shared library for `arch` and load it."""
    lib = folder / "libternary_cuda.so"
    subprocess.run([nvcc(), "-shared", "-Xcompiler", "-fPIC", "-O3", "-std=c++17", f"-arch={arch}", str(KERNEL_CU),
                    "-o", str(lib)], check=True)
    kernel = ctypes.CDLL(str(lib))
    kernel.lbd_ternary_conv_check_geometry.restype = ctypes.c_char_p
    kernel.lbd_ternary_conv_tap_list_bytes.restype = ctypes.c_int64
    return kernel


def nvcc() -> str:
    found = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(found).is_file():
        raise SystemExit("gpu-check: nvcc not found (install the CUDA toolkit)")
    return found


def cuda_toolkit() -> Path:
    """The CUDA toolkit folder (include/cuda_runtime_api.h): $CUDA_HOME, nvcc's folder, or /usr/local/cuda."""
    candidates = [os.environ.get("CUDA_HOME"), str(Path(nvcc()).resolve().parent.parent), "/usr/local/cuda"]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "include" / "cuda_runtime_api.h").is_file():
            return Path(candidate)
    raise SystemExit("gpu-check: CUDA headers (cuda_runtime_api.h) not found; set CUDA_HOME")


class GpuKernel:
    """Our kernel on torch CUDA tensors: tap lists prepared once per weight, then run on the current stream."""

    def __init__(self, kernel):
        self.kernel = kernel

    def prepare(self, g: Geometry, w_packed: np.ndarray, dtype: int):
        import torch

        packed = torch.from_numpy(np.ascontiguousarray(w_packed)).cuda()
        lists = torch.empty(int(self.kernel.lbd_ternary_conv_tap_list_bytes(ctypes.byref(g))), dtype=torch.uint8,
                            device="cuda")
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        status = self.kernel.lbd_ternary_conv_prepare(ctypes.byref(g), dtype, ctypes.c_void_p(packed.data_ptr()),
                                                      packed.shape[1], ctypes.c_void_p(lists.data_ptr()), stream)
        if status != 0:
            raise RuntimeError(f"lbd_ternary_conv_prepare returned {status}")
        return lists, packed

    def run(self, g: Geometry, x, lists, scale, bias, y) -> None:
        import torch

        dtype = 0 if x.dtype == torch.float32 else 1
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        status = self.kernel.lbd_ternary_conv_run(ctypes.byref(g), dtype, ctypes.c_void_p(x.data_ptr()),
                                                  ctypes.c_void_p(lists.data_ptr()), ctypes.c_void_p(scale.data_ptr()),
                                                  ctypes.c_void_p(bias.data_ptr()), ctypes.c_void_p(y.data_ptr()), stream)
        if status != 0:
            raise RuntimeError(f"lbd_ternary_conv_run returned {status}")


def compare(got: np.ndarray, expected: np.ndarray, float16: bool) -> dict:
    """Max |diff| and whether `got` matches: KERNEL_TOLERANCE in float32; in float16 rtol 2e-3 and an atol
    of 2e-3 x (largest finite |expected| + 1). NaN and inf must match exactly in place."""
    got, expected = got.astype(np.float32), expected.astype(np.float32)
    finite = np.isfinite(expected)
    scale = float(np.abs(expected[finite]).max()) + 1 if finite.any() else 1.0
    tolerance = {"rtol": FP16_RTOL, "atol": FP16_RTOL * scale} if float16 else KERNEL_TOLERANCE
    good = bool(np.allclose(got, expected, equal_nan=True, **tolerance))
    diff = np.abs(got[finite] - expected[finite])
    return {"ok": good, "max_abs_diff": float(diff.max()) if diff.size else 0.0}


def check_cases(gpu: GpuKernel, folder: Path, cases: list[dict]) -> list[dict]:
    """Every case on our kernel in float32 and float16, and on cuDNN float32 (TF32 off), vs the ORT reference."""
    import torch
    import torch.nn.functional as F

    results = []
    for case in cases:
        data = np.load(folder / f"{case['name']}.npz")
        g = Geometry(*geometry_fields(case))
        scale, bias = torch.from_numpy(data["scale"]).cuda(), torch.from_numpy(data["bias"]).cuda()
        record = {"case": case["name"]}
        for label, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
            lists, _ = gpu.prepare(g, data["w_packed"], 0 if dtype == torch.float32 else 1)
            x = torch.from_numpy(data["x16"]).cuda().to(dtype)
            y = torch.empty(case["y_shape"], dtype=dtype, device="cuda")
            gpu.run(g, x, lists, scale, bias, y)
            torch.cuda.synchronize()
            record[label] = compare(y.cpu().numpy(), data["y"], dtype == torch.float16)
        if case["activation"] == "none":
            from lbdeploy.ops.ternary_conv import unpack_ternary

            cin_g = case["x_shape"][1] // case["group"]
            w = unpack_ternary(data["w_packed"], (case["y_shape"][1], cin_g, *case["kernel"])).astype(np.float32)
            x = torch.from_numpy(data["x16"]).cuda().float()
            y = F.conv2d(x, torch.from_numpy(w).cuda(), None, case["strides"], case["pads"][0], case["dilations"],
                         case["group"]) * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
            torch.cuda.synchronize()
            record["cudnn_fp32"] = compare(y.cpu().numpy(), data["y"], False)
        results.append(record)
    return results


def graph_time(fn) -> float:
    """Microseconds per call of `fn`: CALLS launches captured in one CUDA graph, REPLAYS replays timed with
    events, median of TRIALS timings (launch overhead amortized as in a served model)."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(CALLS):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(TRIALS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(REPLAYS):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000.0 / (CALLS * REPLAYS))
    return float(np.median(times))


def time_against_cudnn(gpu: GpuKernel, shapes: list) -> list[dict]:
    """Ours (fp32, fp16) vs cuDNN (fp32, TF32, fp16 NCHW, fp16 NHWC) per shape and density, in microseconds."""
    import torch
    import torch.nn.functional as F

    from lbdeploy.models.ternary import draw_ternary
    from lbdeploy.ops.ternary_conv import pack_ternary

    torch.backends.cudnn.benchmark = True
    rows = []
    for cin, cout, h, w, stride in shapes:
        case = conv_case("timing", (1, cin, h, w), cout, 3, stride, 1)
        g = Geometry(*geometry_fields(case))
        x = torch.randn(1, cin, h, w, device="cuda")
        xh = x.half()
        xh_nhwc = xh.contiguous(memory_format=torch.channels_last)
        scale, bias = torch.ones(cout, device="cuda"), torch.zeros(cout, device="cuda")
        y, yh = torch.empty(case["y_shape"], device="cuda"), torch.empty(case["y_shape"], device="cuda").half()
        for density in DENSITIES:
            weights = draw_ternary((cout, cin, 3, 3), density, 7)
            lists, _ = gpu.prepare(g, pack_ternary(weights), 0)
            lists16, _ = gpu.prepare(g, pack_ternary(weights), 1)
            wt = torch.from_numpy(weights.astype(np.float32)).cuda()
            wh, wh_nhwc = wt.half(), wt.half().contiguous(memory_format=torch.channels_last)
            us = {"ours_fp32": graph_time(lambda: gpu.run(g, x, lists, scale, bias, y)),
                  "ours_fp16": graph_time(lambda: gpu.run(g, xh, lists16, scale, bias, yh))}
            for label, tf32 in (("cudnn_fp32", False), ("cudnn_tf32", True)):
                torch.backends.cudnn.allow_tf32 = tf32
                us[label] = graph_time(lambda: F.conv2d(x, wt, None, stride, 1))
            torch.backends.cudnn.allow_tf32 = False
            us["cudnn_fp16_nchw"] = graph_time(lambda: F.conv2d(xh, wh, None, stride, 1))
            us["cudnn_fp16_nhwc"] = graph_time(lambda: F.conv2d(xh_nhwc, wh_nhwc, None, stride, 1))
            rows.append({"cin": cin, "cout": cout, "h": h, "w": w, "stride": stride, "density": density,
                         "us": us, "ours_fp32_over_cudnn_fp32": us["ours_fp32"] / us["cudnn_fp32"],
                         "ours_fp32_over_cudnn_tf32": us["ours_fp32"] / us["cudnn_tf32"],
                         "ours_fp16_over_best_cudnn_fp16": us["ours_fp16"] / min(us["cudnn_fp16_nchw"],
                                                                                 us["cudnn_fp16_nhwc"])})
            print(f"timing {cin}->{cout} {h}x{w}/s{stride} d={density}: "
                  + ", ".join(f"{k} {v:.1f} us" for k, v in us.items()), flush=True)
    return rows


def device_arch() -> str:
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"sm_{major}{minor}"


def load_tvm_ptx(folder: Path, tvm: dict) -> dict:
    """The module's PTX loaded by the driver, which JIT-compiles it for this GPU; every entry looked up.

    The PTX targets sm_87 (ISA 7.4, for JetPack 5 and 6): a GPU of compute capability >= 8.7 takes it
    as it is; an older one gets `.target` lowered to its own architecture (ISA 7.4 covers sm_87 and below).
    """
    if not tvm.get("ok"):
        return {"ok": False, "reason": tvm.get("reason", "no PTX prepared")}
    import torch

    torch.cuda.init()
    arch = device_arch()
    ptx = (folder / tvm["file"]).read_text()
    if int(arch[3:]) < 87:
        ptx = re.sub(r"^\.target \S+", f".target {arch}", ptx, count=1, flags=re.M)
    cuda = ctypes.CDLL("libcuda.so.1")
    context = ctypes.c_void_p()
    for call, status in (("cuInit", cuda.cuInit(0)),
                         ("cuDevicePrimaryCtxRetain", cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), 0)),
                         ("cuCtxSetCurrent", cuda.cuCtxSetCurrent(context))):
        if status != 0:
            return {"ok": False, "arch": arch, "error": f"{call} returned {status}"}
    module = ctypes.c_void_p()
    log = ctypes.create_string_buffer(8192)
    options = (ctypes.c_int * 2)(5, 6)  # CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES
    values = (ctypes.c_void_p * 2)(ctypes.cast(log, ctypes.c_void_p), ctypes.c_void_p(len(log)))
    status = cuda.cuModuleLoadDataEx(ctypes.byref(module), ctypes.c_char_p(ptx.encode() + b"\0"), 2, options, values)
    if status != 0:
        return {"ok": False, "arch": arch, "status": status, "log": log.value.decode(errors="replace")[:2000]}
    found = []
    for name in tvm["entries"]:
        function = ctypes.c_void_p()
        if cuda.cuModuleGetFunction(ctypes.byref(function), module, name.encode()) == 0:
            found.append(name)
    cuda.cuModuleUnload(module)
    target = re.search(r"^\.target (\S+)", ptx, flags=re.M).group(1)
    return {"ok": len(found) == len(tvm["entries"]) > 0, "arch": arch, "ptx_target": target,
            "entries": len(tvm["entries"]), "found": len(found)}


def build_plugin(folder: Path, headers: Path, arch: str) -> tuple[Path, Path]:
    """libternary_trt.so (its own build.sh, for `arch` = an SM number) and the enqueue driver."""
    env = dict(os.environ, TENSORRT_ROOT=str(headers), CUDACXX=nvcc())
    subprocess.run(["bash", str(PLUGIN_DIR / "build.sh"), arch, str(folder)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    cuda_home = cuda_toolkit()
    driver = folder / "gpu_check_plugin"
    subprocess.run(["g++", "-std=c++17", "-O2", "-Wall", "-isystem", str(headers), "-isystem",
                    str(cuda_home / "include"), str(PLUGIN_DRIVER), "-ldl", f"-L{cuda_home / 'lib64'}", "-lcudart",
                    f"-Wl,-rpath,{cuda_home / 'lib64'}", "-o", str(driver)], check=True)
    return folder / "libternary_trt.so", driver


def drive_plugin(inputs: Path, work: Path, case: dict, index: dict, dry_run: bool) -> dict:
    """Builds the plugin and runs its enqueue (capture, eager, replay) on a real layer in float32 and float16."""
    if not index.get("trt_headers"):
        return {"ok": False, "reason": "no TensorRT headers were prepared (run the TensorRT tests once, or set "
                                       "TENSORRT_INCLUDE_DIR, before --prepare)"}
    arch = "87" if dry_run else device_arch()[3:]
    library, driver = build_plugin(work, inputs / index["trt_headers"], arch)
    if dry_run:
        return {"ok": True, "built": [library.name, driver.name], "arch": f"sm_{arch}", "ran": False}
    data = np.load(inputs / f"{case['name']}.npz")
    result = {"case": case["name"], "arch": f"sm_{arch}"}
    good = True
    for label, dtype in (("fp32", np.float32), ("fp16", np.float16)):
        files = {"x": data["x16"].astype(dtype), "w": data["w_words"], "scale": data["scale"], "bias": data["bias"]}
        for name, array in files.items():
            np.ascontiguousarray(array).tofile(work / f"{name}.bin")
        n, c, h, w = case["x_shape"]
        _, cout, oh, ow = case["y_shape"]
        numbers = [0 if dtype == np.float32 else 1, n, c, h, w, cout, oh, ow, *case["kernel"], *case["strides"],
                   *case["pads"], *case["dilations"], case["group"]]
        done = subprocess.run([str(driver), str(library), *map(str, numbers), case["activation"],
                               str(data["w_words"].shape[1]), *(str(work / f"{k}.bin") for k in files),
                               str(work / f"y_{label}_")], capture_output=True, text=True, timeout=300)
        record = {"returncode": done.returncode, "log": (done.stdout + done.stderr)[-1500:]}
        for step in ("capture", "eager", "replay"):
            path = work / f"y_{label}_{step}.bin"
            if done.returncode == 0 and path.is_file():
                got = np.fromfile(path, dtype=dtype).reshape(case["y_shape"])
                record[step] = compare(got, data["y"], dtype == np.float16)
                good &= record[step]["ok"]
        good &= done.returncode == 0
        result[label] = record
    result["ok"] = bool(good)
    return result


def environment() -> dict:
    info = {"python": sys.version.split()[0], "machine": platform.machine()}
    try:
        info["nvcc"] = subprocess.run([nvcc(), "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    except (OSError, SystemExit):
        info["nvcc"] = None
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["arch"] = device_arch()
            info["cudnn"] = torch.backends.cudnn.version()
    except ImportError:
        info["torch"] = None
    return info


def guarded(step):
    """step()'s result, or {"ok": False, "error": ...} when it raises: one failing part (a lease is short)
    must not lose the others' results."""
    import traceback

    try:
        return step()
    except Exception as err:  # noqa: BLE001 - reported in the JSON, the run goes on
        traceback.print_exc()
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}


def passed(result) -> bool:
    """Whether a step's result (a dict with "ok", or a list of per-case records) passed."""
    if isinstance(result, dict):
        return bool(result.get("ok"))
    return all(record[key]["ok"] for record in result for key in ("fp32", "fp16", "cudnn_fp32") if key in record)


def run(inputs: Path, work: Path) -> dict:
    """The checks on the GPU (see the module doc)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False  # the dense references are compared at 1e-4: no TF32
    index = json.loads((inputs / "index.json").read_text())
    gpu = GpuKernel(build_kernel(work, "native"))
    report = {"vectors": guarded(lambda: check_cases(gpu, inputs, index["vectors"])),
              "lbrn_s_layers": guarded(lambda: check_cases(gpu, inputs, index["layers"])),
              "tvm_ptx": guarded(lambda: load_tvm_ptx(inputs, index["tvm"])),
              "plugin": guarded(lambda: drive_plugin(inputs, work, index["layers"][0], index, dry_run=False)),
              "timings": guarded(lambda: time_against_cudnn(gpu, [tuple(s) for s in index["timing_shapes"]]))}
    report["ok"] = all(passed(report[key]) for key in ("vectors", "lbrn_s_layers", "tvm_ptx", "plugin")) and \
        isinstance(report["timings"], list)
    return report


def dry_run(inputs: Path, work: Path) -> dict:
    """Without a GPU: compile and check what can be checked, list what would run."""
    index = json.loads((inputs / "index.json").read_text())
    kernel = build_kernel(work, "sm_87")
    geometries = []
    for case in index["vectors"] + index["layers"]:
        reason = kernel.lbd_ternary_conv_check_geometry(ctypes.byref(Geometry(*geometry_fields(case))))
        geometries.append({"case": case["name"], "ok": reason is None, "reason": reason and reason.decode()})
        print(f"case {case['name']:32s} geometry {'ok' if reason is None else reason.decode()}")
    tvm = dict(index["tvm"])
    if tvm.get("ok"):
        ptxas = Path(nvcc()).parent / "ptxas"
        done = subprocess.run([str(ptxas), "-arch=sm_87", str(inputs / tvm["file"]), "-o", str(work / "tvm.cubin")],
                              capture_output=True, text=True)
        tvm = {"ok": done.returncode == 0, "entries": len(tvm["entries"]), "assembled_for": "sm_87",
               "log": done.stderr[-1000:]}
    plugin = drive_plugin(inputs, work, index["layers"][0], index, dry_run=True)
    plan = [{"cin": s[0], "cout": s[1], "h": s[2], "w": s[3], "stride": s[4], "densities": list(DENSITIES),
             "timed": ["ours_fp32", "ours_fp16", "cudnn_fp32", "cudnn_tf32", "cudnn_fp16_nchw", "cudnn_fp16_nhwc"]}
            for s in index["timing_shapes"]]
    for row in plan:
        print(f"would time {row['cin']}->{row['cout']} {row['h']}x{row['w']}/s{row['stride']} at {DENSITIES}")
    return {"geometries": geometries, "tvm_ptx": tvm, "plugin": plugin, "timing_plan": plan,
            "ok": all(g["ok"] for g in geometries) and tvm.get("ok", False) and plugin["ok"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="write the CPU-made inputs into --inputs and stop")
    parser.add_argument("--dry-run", action="store_true", help="no GPU: prepare and rehearse every step on the CPU")
    parser.add_argument("--inputs", type=Path, default=None, help=f"prepared inputs (default {DEFAULT_INPUTS})")
    parser.add_argument("--json", type=Path, default=DEFAULT_INPUTS / "report.json", help="where the report goes")
    args = parser.parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if args.prepare:
            index = prepare(args.inputs or DEFAULT_INPUTS)
            print(f"prepared {len(index['vectors'])} vectors, {len(index['layers'])} LBRN-S layers, TVM PTX: "
                  f"{index['tvm']['ok']}, TensorRT headers: {bool(index['trt_headers'])} in {args.inputs or DEFAULT_INPUTS}")
            return 0
        inputs = args.inputs
        if args.dry_run and inputs is None:
            inputs = work / "inputs"
            prepare(inputs)
        inputs = inputs or DEFAULT_INPUTS
        if not (inputs / "index.json").is_file():
            print(f"gpu-check: no prepared inputs in {inputs}; run `scripts/gpu-check.sh --prepare` on a machine "
                  "with the project's venv first", file=sys.stderr)
            return 2
        report = dry_run(inputs, work) if args.dry_run else run(inputs, work)
    report = {"dry_run": args.dry_run, "environment": environment(), "seconds": round(time.time() - started, 1),
              **report}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"gpu-check: {'ok' if report['ok'] else 'FAILED'}; report in {args.json}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
