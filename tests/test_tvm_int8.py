"""TVM backend, int8: the QTernaryConv kernel against every q_ vector (x86, and aarch64 in the
emulated lane), its integer-only inner loop, the importer's checks, and a whole QDQ graph with
QTernaryConv compiled by TVM against ONNX Runtime with our kernel library."""

import json
import re
import shutil

import numpy as np
import pytest

tvm = pytest.importorskip("tvm", reason="apache-tvm is not installed (pip install 'lbdeploy[tvm]')")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lbdeploy.exporters.tvm.compile import build, compile_artifact  # noqa: E402
from lbdeploy.exporters.tvm.importer import import_onnx  # noqa: E402
from lbdeploy.exporters.tvm.qternary_kernel import qcpu_kernel  # noqa: E402
from lbdeploy.exporters.tvm.targets import tvm_preset  # noqa: E402
from lbdeploy.targets import get_target as registry_target  # noqa: E402
from lbdeploy.exporters.tvm.ternary_kernel import BLOCK, TernaryGeometry, cpu_tile  # noqa: E402
from lbdeploy.errors import ExportError  # noqa: E402
from lbdeploy.ops.qonnx_schema import make_node  # noqa: E402
from lbdeploy.ops.qternary_conv import INPUTS, OP_VERSION, QKERNEL_TOLERANCE, qternary_conv_reference  # noqa: E402
from lbdeploy.ops.qvectors import load_case, stored_paths, vector_model  # noqa: E402
from lbdeploy.ops.ternary_conv import DOMAIN, TernaryConvAttrs, pack_ternary  # noqa: E402


def preset_of(name: str):
    """The TVM preset of a target name, resolved through the registry once."""
    return tvm_preset(registry_target(name))


pytestmark = pytest.mark.tvm

QVECTORS = stored_paths()
needs_aarch64_cc = pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-gcc") is None,
    reason="aarch64-linux-gnu-gcc is not installed (apt-get install gcc-aarch64-linux-gnu)",
)


def _run(executable, x):
    vm = tvm.runtime.vm.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def _assert_within_tolerance(y, expected):
    assert y.dtype == np.uint8 and y.shape == expected.shape
    diff = np.abs(y.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= QKERNEL_TOLERANCE, f"{np.count_nonzero(diff > QKERNEL_TOLERANCE)} outputs off by up to {diff.max()}"


def test_all_vectors_are_present():
    assert len(QVECTORS) >= 17 and any("worst_case_max_k" in p.stem for p in QVECTORS)


@pytest.mark.parametrize("path", QVECTORS, ids=[p.stem for p in QVECTORS])
def test_qvector_matches_reference_on_x86(path):
    case, arrays = load_case(path)
    executable = build(vector_model(case, arrays), preset_of("x86"), batch=case.n)
    _assert_within_tolerance(_run(executable, arrays["x"]), arrays["y"])


def test_qkernel_inner_loop_is_integer_only():
    """The kernel's LLVM IR: integer adds/subs for the sums, the float multiply only in the
    requantizing epilogue (one per channel and tile row), and no float add or subtract feeding
    the sums (those would make them inexact)."""
    preset = preset_of("x86")
    geom = TernaryGeometry.of((1, 64, 16, 32), 32, TernaryConvAttrs((3, 3), pads=(1, 1, 1, 1), activation="relu"))
    rows, columns = cpu_tile(geom, preset.vector_floats, preset.vector_registers)
    func = qcpu_kernel(geom, "relu", 3, preset.vector_floats, preset.vector_registers)
    lib = tvm.compile(func.with_attr("global_symbol", "qternary_conv"), target=preset.tvm_target())
    ir = lib.mod.inspect_source("ll")
    body = ir[ir.index("qternary_conv"):]
    multiplies = re.findall(r"= (?:fmul|(?:tail )?call [^@\n]*@llvm\.(?:fmuladd|fma)\.v\d+f32\() ?<(\d+) x float>", body)
    # One multiply per output of the register tile (LLVM splits the vectors to the uint8 stores).
    assert 0 < sum(int(lanes) for lanes in multiplies) <= BLOCK * rows * columns, multiplies
    assert not re.search(r"= fsub\b", body), "a float subtract: the sums are not integer"
    assert re.search(r"= add (?:nsw )?<\d+ x i32>", body) and re.search(r"= sub (?:nsw )?<\d+ x i32>", body)
    assert re.search(r"(?:zext|sext) <\d+ x i8> [^\n]* to <\d+ x i32>", body), "uint8 loads are not widened"


def _qnode_model(x, w, attrs, quant, extra_inputs=()):
    """A one-node QTernaryConv model; `extra_inputs` names inputs given as graph inputs, not constants."""
    constants = {"x_scale": np.float32(quant["x_scale"]), "x_zero_point": np.uint8(quant["x_zero_point"]),
                 "W": pack_ternary(w), "scale": quant["scale"], "bias": quant["bias"],
                 "y_scale": np.float32(quant["y_scale"]), "y_zero_point": np.uint8(quant["y_zero_point"])}
    inputs = [helper.make_tensor_value_info("X", TensorProto.UINT8, list(x.shape))]
    for name in extra_inputs:
        value = constants.pop(name)
        inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
    graph = helper.make_graph(
        [make_node(list(INPUTS), ["Y"], attrs, name="q")], "q", inputs,
        [helper.make_tensor_value_info("Y", TensorProto.UINT8, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, OP_VERSION)])


def _random_layer(rng, cin, cout, h, w, density=0.5):
    x = rng.integers(0, 256, (1, cin, h, w), dtype=np.uint8)
    weights = ((rng.random((cout, cin, 3, 3)) < density) * np.where(rng.random((cout, cin, 3, 3)) < 0.5, -1, 1)).astype(np.int8)
    quant = {"x_scale": 0.02, "x_zero_point": 131, "scale": rng.uniform(0.5, 1.5, cout).astype(np.float32),
             "bias": rng.uniform(-1, 1, cout).astype(np.float32), "y_scale": 0.05, "y_zero_point": 60}
    return x, weights, quant


def test_wide_rows_and_a_partial_channel_block_match_the_reference():
    """A 64-wide map (AVX-512 tile of 64 columns), 22 output channels (last block partial), relu."""
    rng = np.random.default_rng(5)
    attrs = TernaryConvAttrs((3, 3), pads=(1, 1, 1, 1), activation="relu")
    x, w, quant = _random_layer(rng, 32, 22, 8, 64)
    executable = build(_qnode_model(x, w, attrs, quant), preset_of("x86"))
    expected = qternary_conv_reference(x, np.float32(quant["x_scale"]), np.uint8(quant["x_zero_point"]), w,
                                       quant["scale"], quant["bias"], np.float32(quant["y_scale"]),
                                       np.uint8(quant["y_zero_point"]), attrs)
    _assert_within_tolerance(_run(executable, x), expected)


def test_channels_last_form_runs_as_the_nchw_kernel_between_transposes():
    case, arrays = load_case(next(p for p in QVECTORS if p.stem == "q_stride2"))
    executable = build(vector_model(case, arrays, layout="NHWC"), preset_of("x86"), batch=case.n)
    y = _run(executable, np.ascontiguousarray(arrays["x"].transpose(0, 2, 3, 1)))
    _assert_within_tolerance(y, arrays["y"].transpose(0, 2, 3, 1))


@pytest.mark.parametrize("name,value", [("y_scale", 0.0), ("y_scale", float("nan")), ("bias", float("nan"))])
def test_degenerate_scales_are_refused(name, value):
    # The op's one behaviour (docs/ops/QTernaryConv.md): refused, like ONNX Runtime and the reference.
    case, arrays = load_case(next(p for p in QVECTORS if p.stem == "q_relu"))
    arrays = {**arrays, name: np.full_like(arrays[name], value)}
    with pytest.raises(ExportError, match="must be finite"):
        import_onnx(vector_model(case, arrays))


def test_computed_quantization_parameters_are_refused():
    rng = np.random.default_rng(0)
    x, w, quant = _random_layer(rng, 8, 8, 6, 6)
    model = _qnode_model(x, w, TernaryConvAttrs((3, 3), pads=(1, 1, 1, 1)), quant, extra_inputs=("y_scale",))
    with pytest.raises(ExportError, match="y_scale must be an initializer"):
        import_onnx(model)


def test_gpu_targets_refuse_qternary_conv():
    case, arrays = load_case(QVECTORS[0])
    with pytest.raises(ExportError, match="no GPU kernel for QTernaryConv"):
        import_onnx(vector_model(case, arrays), gpu=True)


def test_a_wrong_opset_is_listed():
    case, arrays = load_case(QVECTORS[0])
    model = vector_model(case, arrays)
    model.opset_import[1].version = 2
    with pytest.raises(ExportError, match="QTernaryConv \\(opset 2, need 1\\)"):
        import_onnx(model)


def _int8_graph(rng):
    """Q -> QTernaryConv -> DQ -> Conv 1x1 (per-channel int8 weights, DQ) -> Q -> QTernaryConv(relu) -> DQ,
    the shape of an exported int8 LBRN block."""
    c, h, w = 16, 12, 20
    attrs = TernaryConvAttrs((3, 3), pads=(1, 1, 1, 1))
    relu = TernaryConvAttrs((3, 3), pads=(1, 1, 1, 1), activation="relu")
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def qternary(name, x, y, attributes, x_scale, x_zp, y_scale, y_zp):
        weights = ((rng.random((c, c, 3, 3)) < 0.5) * np.where(rng.random((c, c, 3, 3)) < 0.5, -1, 1)).astype(np.int8)
        args = [x, const(f"{name}_xs", np.float32(x_scale)), const(f"{name}_xz", np.uint8(x_zp)),
                const(f"{name}_w", pack_ternary(weights)),
                const(f"{name}_s", rng.uniform(0.5, 1.5, c).astype(np.float32)),
                const(f"{name}_b", rng.uniform(-0.5, 0.5, c).astype(np.float32)),
                const(f"{name}_ys", np.float32(y_scale)), const(f"{name}_yz", np.uint8(y_zp))]
        nodes.append(make_node(args, [y], attributes, name=name))

    nodes.append(helper.make_node("QuantizeLinear", ["x", const("in_s", np.float32(0.02)), const("in_z", np.uint8(128))], ["xq"]))
    qternary("t1", "xq", "t1q", attrs, 0.02, 128, 0.1, 120)
    nodes.append(helper.make_node("DequantizeLinear", ["t1q", "t1_ys", "t1_yz"], ["t1f"]))
    conv_w = rng.integers(-127, 128, (c, c, 1, 1), dtype=np.int8)
    nodes.append(helper.make_node("DequantizeLinear", [const("cw", conv_w), const("cw_s", rng.uniform(0.001, 0.003, c).astype(np.float32)),
                                                       const("cw_z", np.zeros(c, np.int8))], ["cwf"], axis=0))
    nodes.append(helper.make_node("Conv", ["t1f", "cwf", const("cb", rng.uniform(-0.1, 0.1, c).astype(np.float32))], ["cf"]))
    nodes.append(helper.make_node("QuantizeLinear", ["cf", const("c_s", np.float32(0.03)), const("c_z", np.uint8(125))], ["cq"]))
    qternary("t2", "cq", "t2q", relu, 0.03, 125, 0.08, 5)
    nodes.append(helper.make_node("DequantizeLinear", ["t2q", "t2_ys", "t2_yz"], ["y"]))
    graph = helper.make_graph(nodes, "int8", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, h, w])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, OP_VERSION)])


@pytest.fixture(scope="module")
def int8_graph():
    rng = np.random.default_rng(11)
    model = _int8_graph(rng)
    x = rng.uniform(-2.5, 2.5, (1, 16, 12, 20)).astype(np.float32)
    return model, x


def test_int8_graph_matches_onnx_runtime_with_our_kernels(int8_graph, library):
    """The same QDQ graph in TVM and in ORT (which fuses DQ -> Conv -> Q into QLinearConv): the
    outputs agree within a few steps of the last scale (the 1x1 conv's int8 rounding may differ
    by one step, which the second ternary conv can spread to a few output steps)."""
    import onnxruntime as ort

    model, x = int8_graph
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    y = _run(build(model, preset_of("x86")), x)
    step = 0.08
    diff = np.abs(y - expected) / step
    assert np.median(diff) == 0 and np.mean(diff <= 1) >= 0.99 and diff.max() <= 4, (diff.max(), np.mean(diff <= 1))
    assert np.count_nonzero(y) > y.size // 4  # not a saturated or all-zero output


@pytest.mark.arm
@needs_aarch64_cc
def test_aarch64_qkernel_matches_vectors_under_qemu(tmp_path, arm_python):
    """arm64 modules of several q_ vectors (zero points, relu, saturation, stride, groups, the
    largest sums) run under qemu with the TVM runtime against the reference."""
    from lbdeploy.runtime.testing.arm_lane import run_arm_python

    names = ["q_odd_zero_points", "q_relu", "q_saturation", "q_stride2", "q_groups_4", "q_kernel_5x5_pad2",
             "q_worst_case_3x3", "q_wide_128"]
    cases = {}
    for path in QVECTORS:
        if path.stem in names:
            case, arrays = load_case(path)
            fragment = compile_artifact_of_vector(case, arrays, tmp_path / path.stem)
            np.save(tmp_path / path.stem / "x.npy", arrays["x"])
            cases[path.stem] = (fragment, arrays["y"])
    assert len(cases) == len(names)
    run_arm_python(
        "import json, numpy as np, tvm\n"
        "from pathlib import Path\n"
        "from lbdeploy.runtime.backends.tvm import TVMBackend\n"
        f"for name in {sorted(cases)!r}:\n"
        f"    root = Path({str(tmp_path)!r}) / name\n"
        "    backend = TVMBackend(root, json.loads((root / 'manifest.json').read_text()))\n"
        "    # the module's VM directly: TVMBackend.run feeds float32, this input is uint8\n"
        "    y = backend.vm['main'](tvm.runtime.tensor(np.load(root / 'x.npy'), backend.device))\n"
        "    np.save(root / 'y.npy', y.numpy())\n",
        timeout=900,
    )
    for name, (fragment, expected) in cases.items():
        _assert_within_tolerance(np.load(tmp_path / name / "y.npy"), expected)


def compile_artifact_of_vector(case, arrays, folder):
    """An arm64 TVM artifact folder (model.onnx, tvm/model.so, manifest.json) of one q_ vector."""
    import onnx

    from lbdeploy.kernels.elf import elf_arch

    folder.mkdir(parents=True)
    onnx.save(vector_model(case, arrays), folder / "model.onnx")
    fragment = compile_artifact(folder / "model.onnx", registry_target("arm64"), folder, batch=case.n)
    assert elf_arch(folder / fragment["tvm"]["module"]) == "aarch64"
    (folder / "manifest.json").write_text(json.dumps(fragment))
    return fragment


def test_tvm_qkernel_bench_runs_and_checks_agreement(library):
    """bench/tvm_qkernel.py end to end on a small layer (it asserts TVM and ORT agree before timing);
    speed is not asserted."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(repo / "bench" / "tvm_qkernel.py"), "--cin", "16", "--cout", "8", "--size", "16",
         "--repeats", "2", "--densities", "0.5", "--library", library],
        capture_output=True, text=True, timeout=600, cwd=repo,
    )
    assert result.returncode == 0, result.stderr
    assert "TVM vs ORT QTernaryConv d=0.5 16->8 16x16" in result.stdout and "<= 1.50x" in result.stdout


def test_ties_round_half_to_even():
    """v = x / 2 exactly (m = 0.5, b = 0): every odd x is a tie, which must go to the even integer
    (round half away from zero would give 1, 2, 3, ... for x = 1, 3, 5, ...)."""
    x = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    quant = {"x_scale": 1.0, "x_zero_point": 0, "scale": np.ones(1, np.float32), "bias": np.zeros(1, np.float32),
             "y_scale": 2.0, "y_zero_point": 3}
    model = _qnode_model(x, np.ones((1, 1, 1, 1), np.int8), TernaryConvAttrs((1, 1)), quant)
    y = _run(build(model, preset_of("x86")), x)
    np.testing.assert_array_equal(y, np.rint(x / 2).astype(np.uint8) + 3)


def test_demo_model_exports_to_an_int8_tvm_artifact_that_passes_the_gate_and_runs(tmp_path):
    """`lbdeploy export demo.pt --target x86 --quantize int8 --backend tvm`: the accuracy gate runs the TVM
    module itself, and the Predictor runs the artifact."""
    pytest.importorskip("torch", reason="exporting needs torch")
    from pathlib import Path

    from lbdeploy.exporters.export import export_model
    from lbdeploy.runtime.predictor import Predictor

    data = Path(__file__).resolve().parents[1] / "lbdeploy" / "data"
    manifest = export_model(data / "demo.pt", tmp_path / "q", target="x86", backend="tvm", quantize="int8")
    assert manifest["backend"] == "tvm" and manifest["precision"] == "int8"
    assert manifest["accuracy"]["passed"] and manifest["accuracy"]["backend"] == "tvm"
    result = Predictor(tmp_path / "q").predict(str(data / "sample.jpg"))
    assert result.keypoints.shape == (1, 16, 2) and np.isfinite(result.keypoints).all()
