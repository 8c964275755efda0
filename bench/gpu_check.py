"""One lent-GPU session's check of the CUDA TernaryConv kernel (run by scripts/gpu-check.sh).

    python bench/gpu_check.py [--dry-run] [--repeats 20]

On an x86 machine with an NVIDIA GPU, nvcc, PyTorch (CUDA) and CuPy (no TensorRT, no network):
1. builds lbdeploy/kernels/cuda/ternary_conv.cu for this GPU (nvcc -arch=native) and loads it;
2. runs every shared vector (tests/vectors) in float32 and float16 against its stored result;
3. runs a whole LBRN-S with our kernel for every ternary layer (PyTorch for the rest) against the
   CPU reference model;
4. times our kernel (tap lists prepared once, then `lbd_ternary_conv_run`) against cuDNN's dense conv
   in fp32, TF32 and fp16, for 128->128 3x3 at 64x64 and every other LBRN-S ternary shape, at
   densities 0.1 and 0.5, and prints the time ratios.

`--dry-run` (no GPU needed): compiles the kernel for sm_87, checks the vectors load and the
geometries are accepted by the kernel's host API, and lists the LBRN-S shapes that would be timed.
Exit code 0 when every check passed, 1 otherwise. Figures go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lbdeploy.ops.ternary_conv import (ACTIVATIONS, KERNEL_TOLERANCE, pack_ternary,  # noqa: E402
                                       ternary_conv_reference)
from lbdeploy.ops.vectors import load  # noqa: E402

KERNEL_CU = REPO / "lbdeploy" / "kernels" / "cuda" / "ternary_conv.cu"
VECTORS = sorted((REPO / "tests" / "vectors").glob("*.npz"))
DENSITIES = (0.1, 0.5)
HEADLINE = (128, 128, 64, 64)  # cin, cout, h, w of the headline 3x3 layer
FP16_TOLERANCE = {"rtol": 2e-3, "atol": 2e-3}  # one float16 rounding of a float32 sum


class Geometry(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in (
        "n", "c", "h", "w", "cout", "oh", "ow", "kh", "kw", "stride_h", "stride_w", "pad_top", "pad_left",
        "dilation_h", "dilation_w", "group", "activation")]


def geometry(x_shape, cout, k, stride, pad, dilation=1, group=1, activation=0) -> Geometry:
    """The kernel's geometry for an NCHW input and Conv attributes (square kernel, symmetric pads)."""
    n, c, h, w = x_shape
    oh = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    ow = (w + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    return Geometry(n, c, h, w, cout, oh, ow, k, k, stride, stride, pad, pad, dilation, dilation, group, activation)


def build_kernel(folder: Path, arch: str) -> ctypes.CDLL:
    """nvcc the kernel into a shared library for `arch` and load it."""
    lib = folder / "libternary_cuda.so"
    subprocess.run(["nvcc", "-shared", "-Xcompiler", "-fPIC", "-O3", "-std=c++17", f"-arch={arch}", str(KERNEL_CU),
                    "-o", str(lib)], check=True)
    kernel = ctypes.CDLL(str(lib))
    kernel.lbd_ternary_conv_check_geometry.restype = ctypes.c_char_p
    kernel.lbd_ternary_conv_tap_list_bytes.restype = ctypes.c_int64
    return kernel


@functools.lru_cache(maxsize=1)
def lbrn_s_ternary_layers():
    """(name, module, input shape) of every TernaryConv2d in LBRN-S for a 1x3x256x256 image (CPU run)."""
    import torch

    from lbdeploy.models.registry import build_model
    from lbdeploy.models.ternary import TernaryConv2d

    model = build_model("lbrn-s").eval()
    shapes = {}

    def record(name):
        def hook(_module, inputs, _output):
            shapes.setdefault(name, tuple(inputs[0].shape))  # returns None: the output is kept
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in model.named_modules()
             if isinstance(m, TernaryConv2d)]
    with torch.no_grad():
        model(torch.randn(1, 3, 256, 256))
    for hook in hooks:
        hook.remove()
    layers = [(name, m, shapes[name]) for name, m in model.named_modules() if name in shapes]
    return model, layers


def layer_geometry(module, x_shape) -> Geometry:
    return geometry(x_shape, module.out_channels, module.kernel_size[0], module.stride[0], module.padding[0],
                    module.dilation[0], module.groups)


class GpuKernel:
    """Our kernel on torch CUDA tensors: tap lists prepared once per weight, then run."""

    def __init__(self, kernel):
        self.kernel = kernel

    def prepare(self, g: Geometry, weights: np.ndarray, dtype: int = 0):
        import torch

        packed = torch.from_numpy(np.ascontiguousarray(pack_ternary(weights))).cuda()
        lists = torch.empty(int(self.kernel.lbd_ternary_conv_tap_list_bytes(ctypes.byref(g))), dtype=torch.uint8,
                            device="cuda")
        status = self.kernel.lbd_ternary_conv_prepare(ctypes.byref(g), dtype, ctypes.c_void_p(packed.data_ptr()),
                                                      packed.shape[1], ctypes.c_void_p(lists.data_ptr()), None)
        assert status == 0, f"prepare failed: {status}"
        return lists, packed

    def run(self, g: Geometry, x, lists, scale, bias, y) -> None:
        dtype = 0 if x.dtype.itemsize == 4 else 1
        status = self.kernel.lbd_ternary_conv_run(ctypes.byref(g), dtype, ctypes.c_void_p(x.data_ptr()),
                                                  ctypes.c_void_p(lists.data_ptr()), ctypes.c_void_p(scale.data_ptr()),
                                                  ctypes.c_void_p(bias.data_ptr()), ctypes.c_void_p(y.data_ptr()), None)
        assert status == 0, f"run failed: {status}"


def check_vectors(gpu: GpuKernel) -> bool:
    import torch

    ok = True
    for path in VECTORS:
        case, arrays = load(path)
        x = arrays["x"]
        g = geometry(x.shape, arrays["y"].shape[1], case.k, case.stride, case.pad, case.dilation, case.group,
                     ACTIVATIONS.index(case.activation))
        for dtype, tolerance in ((torch.float32, KERNEL_TOLERANCE), (torch.float16, FP16_TOLERANCE)):
            lists, _ = gpu.prepare(g, arrays["w"], 0 if dtype == torch.float32 else 1)
            xt = torch.from_numpy(x).cuda().to(dtype)
            y = torch.empty(arrays["y"].shape, dtype=dtype, device="cuda")
            gpu.run(g, xt, lists, torch.from_numpy(arrays["scale"]).cuda(), torch.from_numpy(arrays["bias"]).cuda(), y)
            torch.cuda.synchronize()
            expected, scale = arrays["y"], 1.0
            if dtype == torch.float16:  # reference on the float16-rounded input, tolerance scaled to the output
                expected = ternary_conv_reference(x.astype(np.float16).astype(np.float32), arrays["w_packed"],
                                                  arrays["scale"], arrays["bias"], case.attrs())
                scale = float(np.abs(expected).max() + 1)
            good = np.allclose(y.float().cpu().numpy(), expected, rtol=tolerance["rtol"],
                               atol=tolerance["atol"] * scale)
            print(f"vector {path.stem:28s} {str(dtype):14s} {'ok' if good else 'MISMATCH'}")
            ok &= good
    return ok


def check_lbrn_s(gpu: GpuKernel) -> bool:
    """LBRN-S with every TernaryConv2d running our kernel vs the CPU model."""
    import torch

    model, layers = lbrn_s_ternary_layers()
    image = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        reference = model(image)
    model = model.cuda()
    for _name, module, x_shape in layers:
        g = layer_geometry(module, x_shape)
        lists, _ = gpu.prepare(g, module.weight.cpu().numpy())
        ones = torch.ones(module.out_channels, device="cuda")
        zeros = torch.zeros(module.out_channels, device="cuda")

        def forward(x, g=g, lists=lists, ones=ones, zeros=zeros, cout=module.out_channels):
            y = torch.empty((x.shape[0], cout, g.oh, g.ow), device="cuda")
            gpu.run(g, x.contiguous(), lists, ones, zeros, y)
            return y

        module.forward = forward
    with torch.no_grad():
        ours = model(image.cuda()).cpu()
    error = float((ours - reference).abs().max())
    good = error <= 1e-3 * float(reference.abs().max() + 1)
    print(f"LBRN-S ({len(layers)} ternary layers on our kernel) vs CPU: max |diff| {error:.2e} "
          f"{'ok' if good else 'MISMATCH'}")
    return good


def _time(fn, repeats: int) -> float:
    """Median milliseconds of `fn` over `repeats` runs, timed with CUDA events after a warm-up."""
    import torch

    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def timing_shapes() -> list[tuple[int, int, int, int, int]]:
    """(cin, cout, h, w, stride) of the headline layer and every distinct LBRN-S ternary layer."""
    _model, layers = lbrn_s_ternary_layers()
    shapes = {(*HEADLINE, 1)}
    for _name, module, x_shape in layers:
        shapes.add((x_shape[1], module.out_channels, x_shape[2], x_shape[3], module.stride[0]))
    return sorted(shapes, key=lambda s: (s != (*HEADLINE, 1), s))


def time_against_cudnn(gpu: GpuKernel, repeats: int) -> None:
    import torch
    import torch.nn.functional as F

    from lbdeploy.models.ternary import draw_ternary

    print("| cin->cout | map | density | ours fp32 ms | cuDNN fp32 | TF32 | fp16 | ours fp16 | "
          "ours/fp32 | ours/TF32 | ours fp16/cuDNN fp16 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for cin, cout, h, w, stride in timing_shapes():
        for density in DENSITIES:
            weights = draw_ternary((cout, cin, 3, 3), density, 7)
            g = geometry((1, cin, h, w), cout, 3, stride, 1)
            lists, _ = gpu.prepare(g, weights)
            lists16, _ = gpu.prepare(g, weights, 1)
            scale, bias = torch.ones(cout, device="cuda"), torch.zeros(cout, device="cuda")
            x = torch.randn(1, cin, h, w, device="cuda")
            y = torch.empty(1, cout, g.oh, g.ow, device="cuda")
            xh, yh = x.half(), y.half()
            wt = torch.from_numpy(weights.astype(np.float32)).cuda()
            ours = _time(lambda: gpu.run(g, x, lists, scale, bias, y), repeats)
            ours16 = _time(lambda: gpu.run(g, xh, lists16, scale, bias, yh), repeats)
            times = {}
            for label, tf32 in (("fp32", False), ("tf32", True)):
                torch.backends.cudnn.allow_tf32 = tf32
                times[label] = _time(lambda: F.conv2d(x, wt, None, stride, 1), repeats)
            wh = wt.half()
            times["fp16"] = _time(lambda: F.conv2d(xh, wh, None, stride, 1), repeats)
            print(f"| {cin}->{cout} | {h}x{w}/s{stride} | {density} | {ours:.3f} | {times['fp32']:.3f} | "
                  f"{times['tf32']:.3f} | {times['fp16']:.3f} | {ours16:.3f} | {ours / times['fp32']:.2f} | "
                  f"{ours / times['tf32']:.2f} | {ours16 / times['fp16']:.2f} |")


def dry_run(folder: Path) -> bool:
    """Without a GPU: compile for sm_87, check every geometry with the host API, list the timed shapes."""
    kernel = build_kernel(folder, "sm_87")
    ok = True
    for path in VECTORS:
        case, arrays = load(path)
        g = geometry(arrays["x"].shape, arrays["y"].shape[1], case.k, case.stride, case.pad, case.dilation,
                     case.group, ACTIVATIONS.index(case.activation))
        reason = kernel.lbd_ternary_conv_check_geometry(ctypes.byref(g))
        good = reason is None and (g.oh, g.ow) == arrays["y"].shape[2:]
        ok &= good
        print(f"vector {path.stem:28s} geometry {'ok' if good else reason}")
    _model, layers = lbrn_s_ternary_layers()
    for _name, module, x_shape in layers:
        ok &= kernel.lbd_ternary_conv_check_geometry(ctypes.byref(layer_geometry(module, x_shape))) is None
    print(f"LBRN-S: {len(layers)} ternary layers, all accepted by the kernel: {ok}")
    for shape in timing_shapes():
        print("would time (cin, cout, h, w, stride) =", shape, "at densities", DENSITIES)
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="no GPU: compile and check the python parts")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        if args.dry_run:
            return 0 if dry_run(Path(folder)) else 1
        gpu = GpuKernel(build_kernel(Path(folder), "native"))
        ok = check_vectors(gpu) & check_lbrn_s(gpu)
        time_against_cudnn(gpu, args.repeats)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
