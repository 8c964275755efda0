"""TVM backend: TernaryConv kernel vs the shared vectors, add/sub-only code, importer errors,
target presets, cross builds (aarch64, Jetson PTX), the runtime backend, whole models vs PyTorch,
and an aarch64 module run under qemu in the emulated ARM lane."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm", reason="apache-tvm is not installed (pip install 'lbdeploy[tvm]')")

import onnx  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lbdeploy.exporters.tvm.compile import build, compile_artifact  # noqa: E402
from lbdeploy.exporters.tvm.importer import import_onnx  # noqa: E402
from lbdeploy.exporters.tvm.targets import list_targets, tvm_preset  # noqa: E402
from lbdeploy.targets import get_target as registry_target  # noqa: E402
from lbdeploy.exporters.tvm.ternary_kernel import (  # noqa: E402
    BLOCK, PATTERNS, TernaryGeometry, chunk_count, cpu_kernel, cpu_tile, encode_weights, pattern_digits,
    row_alignment_padding,
)
from lbdeploy.errors import ConfigError, ExportError, InputError, TernaryWeightError  # noqa: E402
from lbdeploy.kernels.elf import elf_arch  # noqa: E402
from lbdeploy.ops.onnx_schema import make_node  # noqa: E402
from lbdeploy.ops.ternary_conv import DOMAIN, KERNEL_TOLERANCE, OP_VERSION, TernaryConvAttrs  # noqa: E402
from lbdeploy.ops.vectors import load  # noqa: E402
from lbdeploy.runtime.backends.tvm import TVMBackend  # noqa: E402


def preset_of(name: str):
    """The TVM preset of a target name, resolved through the registry once."""
    return tvm_preset(registry_target(name))


pytestmark = pytest.mark.tvm

VECTORS = sorted((Path(__file__).parent / "vectors").glob("*.npz"))
needs_aarch64_cc = pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-gcc") is None,
    reason="aarch64-linux-gnu-gcc is not installed (apt-get install gcc-aarch64-linux-gnu)",
)


def _ternary_model(arrays, attrs, weights="w_packed", extra_nodes=(), output_shape=None):
    """A one-TernaryConv ONNX model (plus `extra_nodes` reading its output "t")."""
    inits = [numpy_helper.from_array(arrays[weights], "w"), numpy_helper.from_array(arrays["scale"], "scale"),
             numpy_helper.from_array(arrays["bias"], "bias")]
    out = "t" if not extra_nodes else "y"
    nodes = [make_node(["x", "w", "scale", "bias"], ["t"], attrs), *extra_nodes]
    graph = helper.make_graph(
        nodes, "ternary",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *arrays["x"].shape[1:]])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, output_shape)], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, OP_VERSION)])


def _run(executable, x):
    vm = tvm.runtime.vm.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_vector_matches_reference_on_x86(path):
    case, arrays = load(path)
    model = _ternary_model(arrays, case.attrs())
    executable = build(model, preset_of("x86"), batch=case.n)
    np.testing.assert_allclose(_run(executable, arrays["x"]), arrays["y"], **KERNEL_TOLERANCE)


def test_unpacked_int8_weights_give_the_same_result():
    case, arrays = load(Path(__file__).parent / "vectors" / "groups_4.npz")
    executable = build(_ternary_model(arrays, case.attrs(), weights="w"), preset_of("x86"))
    np.testing.assert_allclose(_run(executable, arrays["x"]), arrays["y"], **KERNEL_TOLERANCE)


def test_channel_chunks_with_groups_match_the_reference():
    """Input channels split into L1-sized chunks (partial sums kept in the output between them),
    input rows padded to whole vectors, groups and a padded last channel block: the reference result."""
    from lbdeploy.ops.ternary_conv import ternary_conv_reference

    rng = np.random.default_rng(3)
    attrs = TernaryConvAttrs((3, 3), pads=(1, 1, 1, 1), group=2, activation="relu")
    x = rng.standard_normal((1, 256, 16, 64)).astype(np.float32)
    w = (rng.integers(-1, 2, (22, 128, 3, 3)) * (rng.random((22, 128, 3, 3)) < 0.5)).astype(np.int8)
    scale, bias = rng.uniform(0.5, 1.5, 22).astype(np.float32), rng.standard_normal(22).astype(np.float32)
    preset = preset_of("x86")
    geom = TernaryGeometry.of(x.shape, 22, attrs)
    assert chunk_count(geom, preset.vector_floats, preset.vector_registers) > 1
    assert row_alignment_padding(geom, preset.vector_floats) > 0
    arrays = {"x": x, "w": w, "scale": scale, "bias": bias}
    executable = build(_ternary_model(arrays, attrs, weights="w"), preset)
    np.testing.assert_allclose(_run(executable, x), ternary_conv_reference(x, w, scale, bias, attrs),
                               **KERNEL_TOLERANCE)


def test_pattern_tables_are_compact_and_decode_back():
    case, arrays = load(Path(__file__).parent / "vectors" / "wide_128.npz")
    geom = TernaryGeometry.of(arrays["x"].shape, case.cout, case.attrs())
    tables = encode_weights(arrays["w"], geom)
    flat = arrays["w"].reshape(case.cout, -1).astype(int)
    assert tables.idx.dtype == np.uint16 and tables.offsets.size == geom.k  # one offset per tap, not per non-zero
    assert tables.idx.size < np.count_nonzero(flat)  # each tap once per channel block, not per channel
    assert tables.nbytes < 2 * np.count_nonzero(flat) < flat.size * 4  # below 16 bits per non-zero, float32
    decoded = np.zeros_like(flat)
    for block in range(geom.blocks_per_group):
        for pattern in range(PATTERNS):
            entry = 2 * (block * PATTERNS + pattern)
            digits = np.array(pattern_digits(pattern + PATTERNS + 1))
            for sign, (lo, hi) in ((1, (entry, entry + 1)), (-1, (entry + 1, entry + 2))):
                taps = tables.idx[tables.ptr[lo]:tables.ptr[hi]]
                decoded[block * BLOCK:(block + 1) * BLOCK, taps] += sign * digits[:, None]
    np.testing.assert_array_equal(decoded, flat)


def test_ternary_kernel_code_adds_and_subtracts_only():
    """The kernel's LLVM IR turns no weight into a float and multiplies only in the epilogue."""
    preset = preset_of("x86")
    geom = TernaryGeometry.of((1, 64, 16, 32), 32, TernaryConvAttrs((3, 3), pads=(1, 1, 1, 1), activation="relu"))
    rows, _ = cpu_tile(geom, preset.vector_floats, preset.vector_registers)
    func = cpu_kernel(geom, activation="relu", vector_floats=preset.vector_floats,
                      vector_registers=preset.vector_registers)
    lib = tvm.compile(func.with_attr("global_symbol", "ternary_conv"), target=preset.tvm_target())
    ir = lib.mod.inspect_source("ll")
    body = ir[ir.index("ternary_conv"):]
    assert not re.search(r"\b[su]itofp\b", body), "a weight is converted to float"
    multiplies = re.findall(r"= (?:fmul\b|(?:tail )?call [^@\n]*@llvm\.(?:fmuladd|fma)\.)[^\n]*", body)
    # One scale multiply (LLVM may fuse it with the bias add) per channel and row of the register
    # tile, in the epilogue; the accumulation and pattern-combine steps only add and subtract.
    assert 0 < len(multiplies) <= BLOCK * rows, multiplies
    assert re.search(r"= fadd\b", body) and re.search(r"= fsub\b", body)


def test_unsupported_ops_are_all_listed():
    case, arrays = load(Path(__file__).parent / "vectors" / "basic_3x3.npz")
    model = _ternary_model(arrays, case.attrs(), extra_nodes=(
        helper.make_node("Frobnicate", ["t"], ["u"], domain="com.example"),
        helper.make_node("TernaryConv", ["u", "w", "scale", "bias"], ["v"], domain="other.domain", kernel_shape=[3, 3]),
        helper.make_node("Relu", ["v"], ["y"]),
    ))
    model.opset_import.extend([helper.make_opsetid("com.example", 1), helper.make_opsetid("other.domain", 1)])
    with pytest.raises(ExportError) as err:
        import_onnx(model, {"x": list(arrays["x"].shape)})
    assert "com.example::Frobnicate" in str(err.value) and "other.domain::TernaryConv" in str(err.value)


INVALID = sorted((Path(__file__).parent / "vectors" / "invalid").glob("*.npz"))


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_importer_refuses_invalid_weight_codes(path):
    """The shared invalid-weights vectors (code 3 in a weight, code 3 in the padding past K)."""
    case, arrays = load(path)
    with pytest.raises(TernaryWeightError, match="invalid 2-bit code 3"):
        import_onnx(_ternary_model(arrays, case.attrs()), {"x": list(arrays["x"].shape)})


def test_target_presets():
    assert list_targets()[0] == "x86"
    assert {"arm64", "rpi4", "rpi5", "jetson-orin-cpu", "jetson-orin", "jetson-xavier"} <= set(list_targets())
    assert preset_of("rpi4").target["mcpu"] == "cortex-a72"
    assert "+dotprod" in preset_of("rpi5").target["mattr"]
    orin = preset_of("jetson-orin")
    assert orin.gpu and orin.target["kind"] == "nvptx" and orin.target["mcpu"] == "sm_87"
    assert orin.target["host"]["mtriple"] == "aarch64-linux-gnu"
    assert preset_of("jetson-xavier").target["mcpu"] == "sm_72"
    assert orin.board is registry_target("jetson") and orin.name == "jetson-orin" and orin.arch == "aarch64"
    for name in list_targets():
        preset_of(name).tvm_target()  # every preset is a valid TVM 0.27 target
    with pytest.raises(ConfigError, match="rpi4"):
        preset_of("rpi3")


def test_targets_command_lists_presets():
    from lbdeploy.cli import main

    result = CliRunner().invoke(main, ["targets"])
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in ("x86", "rpi5", "jetson-orin"))


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    """A TernaryConv + MaxPool model with a symbolic batch, saved as model.onnx."""
    case, arrays = load(Path(__file__).parent / "vectors" / "relu.npz")
    pool = helper.make_node("MaxPool", ["t"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    path = tmp_path_factory.mktemp("small") / "model.onnx"
    onnx.save(_ternary_model(arrays, case.attrs(), extra_nodes=(pool,)), path)
    reference = arrays["y"].reshape(case.n, case.cout, 4, 2, 4, 2).max(axis=(3, 5))
    return path, arrays["x"], reference


def test_backend_runs_any_batch_and_checks_the_input_size(small_onnx, tmp_path):
    path, x, reference = small_onnx
    fragment = compile_artifact(path, registry_target("x86"), tmp_path)
    assert fragment["tvm"]["batch"] == 1 and elf_arch(tmp_path / fragment["tvm"]["module"]) == "x86_64"
    backend = TVMBackend(tmp_path, fragment)
    batch = np.concatenate([x, x[:1]])  # 3 samples through a batch-1 module
    out = backend.run({"x": batch})["y"]
    np.testing.assert_allclose(out, np.concatenate([reference, reference[:1]]), **KERNEL_TOLERANCE)
    with pytest.raises(InputError, match="compiled for"):
        backend.run({"x": np.zeros((1, 16, 9, 8), np.float32)})


@needs_aarch64_cc
def test_aarch64_cross_compile_produces_an_aarch64_library(small_onnx, tmp_path):
    fragment = compile_artifact(small_onnx[0], registry_target("rpi4"), tmp_path)
    assert fragment["tvm"]["arch"] == "aarch64"
    assert elf_arch(tmp_path / fragment["tvm"]["module"]) == "aarch64"


def _ptxas() -> str:
    """ptxas of the CUDA 12 wheel the GPU build already needs (it still assembles sm_72), else $PATH's."""
    try:
        import nvidia.cuda_nvcc as wheel

        found = Path(next(iter(wheel.__path__))) / "bin" / "ptxas"
        if found.is_file():
            return str(found)
    except ImportError:
        pass
    found = shutil.which("ptxas") or "/usr/local/cuda/bin/ptxas"
    if not Path(found).is_file():
        pytest.skip("ptxas not installed (pip install nvidia-cuda-nvcc-cu12)")
    return found


@needs_aarch64_cc
@pytest.mark.parametrize("preset", [name for name in list_targets() if name != "x86" and preset_of(name).gpu])
def test_gpu_module_ptx_assembles_into_launchable_kernels(small_onnx, tmp_path, preset):
    """ptxas compiles the module's PTX for the board's SM and reports a kernel entry per TVM kernel."""
    import subprocess

    from lbdeploy.exporters.tvm.kernel_entries import embedded_ptx

    try:
        fragment = compile_artifact(small_onnx[0], registry_target(preset), tmp_path)
    except ExportError as err:
        if "libdevice" in str(err):
            pytest.skip(str(err))
        raise
    module = tmp_path / fragment["tvm"]["module"]
    assert fragment["tvm"]["device"] == "cuda" and elf_arch(module) == "aarch64"
    (ptx,) = embedded_ptx(module)
    sm = preset_of(preset).target["mcpu"]
    assert f".target {sm}" in ptx
    # JetPack 5's driver (CUDA 11.4) JIT-compiles PTX up to ISA 7.4, so the module runs on JetPack 5 and 6.
    version = tuple(int(v) for v in re.search(r"^\.version (\d+)\.(\d+)", ptx, flags=re.M).groups())
    assert version <= (7, 4)
    (tmp_path / "module.ptx").write_text(ptx)
    done = subprocess.run([_ptxas(), "-v", f"-arch={sm}", str(tmp_path / "module.ptx"), "-o",
                           str(tmp_path / "module.cubin")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    entries = re.findall(r"Compiling entry function '(\w+)'", done.stderr)
    assert "ternary_conv_kernel" in entries and "max_pool2d_kernel" in entries, done.stderr


def test_kernel_marking_keeps_the_ptx_length_and_leaves_called_functions():
    from lbdeploy.exporters.tvm.kernel_entries import entry_names, mark_kernel_entries

    ptx = ("//\n// Generated by LLVM NVPTX Back-End\n//\n\n.version 7.4\n.target sm_87\n\n"
           "\t// .globl\thelper\n.visible .func helper(\n)\n{\n\tret;\n}\n"
           "\t// .globl\tadd_kernel\n.visible .func add_kernel(\n\t.param .b64 add_kernel_param_0\n)\n{\n"
           "\tcall.uni helper, ();\n\tret;\n}\n")
    marked = mark_kernel_entries(ptx)
    assert len(marked) == len(ptx) and entry_names(marked) == ["add_kernel"]
    assert ".visible .func helper(" in marked
    with pytest.raises(ExportError, match="LLVM NVPTX"):
        mark_kernel_entries(ptx.replace("\t// .globl\tadd_kernel\n", ""))


@pytest.mark.arm
@needs_aarch64_cc
def test_aarch64_module_runs_under_qemu(small_onnx, tmp_path, arm_python):
    import json

    from lbdeploy.runtime.testing.arm_lane import run_arm_python

    path, x, reference = small_onnx
    fragment = compile_artifact(path, registry_target("arm64"), tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(fragment))
    np.save(tmp_path / "x.npy", x)
    run_arm_python(
        "import json, sys, numpy as np\n"
        "from pathlib import Path\n"
        "from lbdeploy.runtime.backends.tvm import TVMBackend\n"
        f"root = Path({str(tmp_path)!r})\n"
        "backend = TVMBackend(root, json.loads((root / 'manifest.json').read_text()))\n"
        "np.save(root / 'y.npy', backend.run({'x': np.load(root / 'x.npy')})['y'])\n",
        timeout=600,
    )
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), reference, **KERNEL_TOLERANCE)


def _export_tvm(tmp_path, name, **overrides):
    from lbdeploy.exporters.export import export_model
    from lbdeploy.checkpoint import save_checkpoint
    from lbdeploy.models import build_model

    import torch

    torch.manual_seed(0)  # as tests/test_export.py: the same small networks, traced once per run
    checkpoint = save_checkpoint(tmp_path / f"{name}.pt", build_model(name, **overrides))
    return export_model(checkpoint, tmp_path / "out", target="x86", backend="tvm")


@pytest.mark.parametrize("name, overrides", [
    ("lbrn-s", {"stacks": 2, "depth": 2, "input_size": (64, 64)}),
    # every pyramid layer kind, few of them: TVM compiles a kernel per distinct conv geometry
    ("lbrn-p", {"stacks": 1, "depth": 2, "cardinality": 2, "input_size": (64, 64)}),
    ("resnet-lbb-56", {}),
    ("cpd-lb", {"width": 4, "channels": 4, "input_size": (64, 64)}),  # dilated TernaryConvs, saliency parity
])
def test_whole_model_matches_pytorch(tmp_path, name, overrides):
    """The exporter's parity gate runs the TVM module on this machine against PyTorch eager."""
    manifest = _export_tvm(tmp_path, name, **overrides)
    assert manifest["parity"]["backend"] == "tvm" and manifest["parity"]["passed"]
    assert "tvm/model.so" in manifest["files"]


@pytest.mark.slow
def test_whole_8_stack_model_matches_pytorch(tmp_path):
    # lbrn-s only: a randomly initialised 8-stack lbrn-p overflows float32 in PyTorch itself. Eight
    # stacks make the error grow through the chain; 128x128 maps (the hourglass reaches 2x2) keep
    # the gate's eager and TVM runs at a quarter of the paper size's.
    manifest = _export_tvm(tmp_path, "lbrn-s", stacks=8, input_size=(128, 128))
    assert manifest["parity"]["backend"] == "tvm" and manifest["parity"]["passed"]


@pytest.mark.arm
@needs_aarch64_cc
def test_rpi4_artifact_of_the_demo_model_runs_under_qemu_and_matches_pytorch(tmp_path, arm_python):
    """`lbdeploy export demo.pt --target rpi4 --backend tvm`: an aarch64 module that matches PyTorch."""
    import torch

    from lbdeploy.cli import main
    from lbdeploy.checkpoint import load_model
    from lbdeploy.kernels.elf import elf_arch
    from lbdeploy.runtime.testing.arm_lane import REPO_ROOT, run_artifact_emulated

    demo = REPO_ROOT / "lbdeploy" / "data" / "demo.pt"
    result = CliRunner().invoke(main, ["export", str(demo), "--target", "rpi4", "--backend", "tvm",
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["backend"] == "tvm" and elf_arch(tmp_path / "out" / manifest["tvm"]["module"]) == "aarch64"
    x = np.random.default_rng(2).standard_normal((1, 3, 128, 128)).astype(np.float32)
    outputs = run_artifact_emulated(tmp_path / "out", x, backend="tvm", timeout=900)
    model, _ = load_model(demo)
    with torch.no_grad():
        expected = model(torch.from_numpy(x))[-1].numpy()
    final = [o["name"] for o in manifest["outputs"] if o.get("final")][0]
    np.testing.assert_allclose(outputs[final], expected, rtol=0, atol=1e-5 + 1e-3 * float(np.abs(expected).max()))


def test_depthwise_1x1_conv_with_bias_matches_numpy():
    """A 1x1 depthwise Conv + bias + Relu (BatchNorm as a grouped conv, as in int8 QDQ graphs): its
    reduction has only unit loops, so the bias epilogue must not be inlined into it (it was added
    twice)."""
    rng = np.random.default_rng(4)
    c = 32
    w = rng.standard_normal((c, 1, 1, 1)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["t"], group=c, kernel_shape=[1, 1]),
         helper.make_node("Relu", ["t"], ["y"])], "depthwise",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 16, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.standard_normal((1, c, 16, 32)).astype(np.float32)
    expected = np.maximum(x * w.reshape(1, c, 1, 1) + b.reshape(1, c, 1, 1), 0)
    np.testing.assert_allclose(_run(build(model, preset_of("x86")), x), expected, rtol=1e-6, atol=1e-6)
