"""The emulated ARM lane: aarch64 Python, ONNX Runtime and our kernels under qemu-user.

Every test here needs the lane (`arm_python` fixture: built by scripts/arm-lane.sh, cached in
.cache/arm-lane; skipped with the reason when it cannot be built, failed under LBDEPLOY_REQUIRE_ARM=1).
Each emulated start with numpy + onnxruntime costs ~2 s, so a test batches its work into one
emulated process.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lbdeploy.errors import KernelLibraryError
from lbdeploy.ops.ternary_conv import DOMAIN, KERNEL_TOLERANCE, OP_VERSION
from lbdeploy.ops.vectors import load
from lbdeploy.runtime.testing.arm_lane import (
    LANE_SCRIPT,
    REPO_ROOT,
    UNAVAILABLE_EXIT_CODE,
    OnnxRun,
    predict_emulated,
    run_arm_python,
    run_artifact_emulated,
    run_onnx_emulated,
)

onnx = pytest.importorskip("onnx", reason="building the test models needs onnx (pip install lbdeploy[torch])")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from runtime_artifacts import pool_manifest, pool_model, write_artifact  # noqa: E402

pytestmark = pytest.mark.arm

VECTORS = sorted((REPO_ROOT / "tests" / "vectors").glob("*.npz"))
OPSET = 18
# Modules a board imports to run an artifact: they must import with numpy + onnxruntime and no torch.
BOARD_MODULES = (
    "lbdeploy.ops.ternary_conv", "lbdeploy.ops.vectors", "lbdeploy.kernels.elf", "lbdeploy.runtime.testing.arm_lane",
    "lbdeploy.artifact", "lbdeploy.runtime.backends", "lbdeploy.runtime.backends.ort", "lbdeploy.transforms", "lbdeploy.runtime.predictor",
)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _graph_io(case, y: np.ndarray):
    """Input x and output y, with a symbolic batch dimension N."""
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", case.cin, case.h, case.w])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *y.shape[1:]])
    return x_info, y_info


def standard_conv_model(case, arrays: dict, path: Path) -> Path:
    """The vector's TernaryConv written with standard ONNX ops: Conv(W * scale, bias) + activation."""
    attrs = case.attrs()
    weights = arrays["w"].astype(np.float32) * arrays["scale"][:, None, None, None]
    conv_out = "y" if attrs.activation == "none" else "conv"
    nodes = [
        helper.make_node(
            "Conv", ["x", "w", "b"], [conv_out], kernel_shape=list(attrs.kernel_shape), strides=list(attrs.strides),
            pads=list(attrs.pads), dilations=list(attrs.dilations), group=attrs.group,
        )
    ]
    if attrs.activation != "none":
        nodes.append(helper.make_node({"relu": "Relu", "sigmoid": "Sigmoid"}[attrs.activation], ["conv"], ["y"]))
    x_info, y_info = _graph_io(case, arrays["y"])
    graph = helper.make_graph(
        nodes, case.name, [x_info], [y_info],
        initializer=[numpy_helper.from_array(weights, "w"), numpy_helper.from_array(arrays["bias"], "b")],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def ternary_conv_model(case, arrays: dict, path: Path) -> Path:
    """A one-node ai.lbdeploy::TernaryConv model of the vector, with packed uint8 weights."""
    from lbdeploy.ops.onnx_schema import make_node, register_schema

    register_schema()
    x_info, y_info = _graph_io(case, arrays["y"])
    graph = helper.make_graph(
        [make_node(["x", "w", "scale", "bias"], ["y"], case.attrs(), name=case.name)], case.name, [x_info], [y_info],
        initializer=[numpy_helper.from_array(arrays[name], name) for name in ("scale", "bias")]
        + [numpy_helper.from_array(arrays["w_packed"], "w")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, OP_VERSION)]
    )
    return _save(model, path)


def assert_vectors_match(outputs: list[dict], cases: list) -> None:
    """Each emulated output equals its vector's `y` under KERNEL_TOLERANCE; names every failing case."""
    failures = []
    for result, (case, arrays) in zip(outputs, cases):
        got, want = result["y"], arrays["y"]
        if got.shape != want.shape or not np.allclose(got, want, equal_nan=True, **KERNEL_TOLERANCE):
            err = np.abs(got - want).max() if got.shape == want.shape else f"shape {got.shape} != {want.shape}"
            failures.append(f"{case.name}: max |diff| {err}")
    assert not failures, "aarch64 results differ from the reference:\n" + "\n".join(failures)


def test_lane_pins_equal_the_dev_constraints():
    script = LANE_SCRIPT.read_text()
    lane_pins = dict(re.findall(r"^\s+([A-Za-z0-9_.-]+)==(\S+)$", script, flags=re.M))
    constraints = dict(
        re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (REPO_ROOT / "constraints.txt").read_text(), flags=re.M)
    )
    assert {"numpy", "onnxruntime", "apache-tvm"} <= lane_pins.keys()
    shared = lane_pins.keys() & constraints.keys()
    assert {name: lane_pins[name] for name in shared} == {name: constraints[name] for name in shared}


def test_lane_script_reports_missing_prerequisites_with_exit_3(tmp_path):
    shims = tmp_path / "bin"
    shims.mkdir()
    for tool in ("bash", "readlink", "dirname", "mkdir", "flock", "cat", "sha256sum", "cut", "id", "rm", "printf"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not on PATH")
        (shims / tool).symlink_to(found)
    done = subprocess.run(
        [str(shims / "bash"), str(LANE_SCRIPT), str(tmp_path / "lane")], env={"PATH": str(shims)},
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == UNAVAILABLE_EXIT_CODE, done.stderr
    assert "apt-get not found" in done.stderr
    assert done.stdout == ""


def test_lane_is_aarch64_with_numpy_onnxruntime_tvm(arm_python):
    import onnxruntime

    done = run_arm_python(
        "import json, platform, numpy, onnxruntime, tvm; print(json.dumps({'machine': platform.machine(), "
        "'numpy': numpy.__version__, 'onnxruntime': onnxruntime.__version__, 'tvm': tvm.__version__, "
        "'providers': onnxruntime.get_available_providers()}))"
    )
    info = json.loads(done.stdout.splitlines()[-1])
    assert info["machine"] == "aarch64"
    assert info["numpy"] == np.__version__
    assert info["onnxruntime"] == onnxruntime.__version__
    assert info["tvm"].startswith("0.27")
    assert "CPUExecutionProvider" in info["providers"]


def test_board_modules_import_without_torch(arm_python):
    code = (
        "import importlib, sys\n"
        f"for name in {BOARD_MODULES!r}: importlib.import_module(name)\n"
        "assert 'torch' not in sys.modules, 'a board module imported torch'\n"
        "try:\n    import torch\nexcept ModuleNotFoundError:\n    print('no torch')\n"
    )
    done = run_arm_python(code)
    assert done.stdout.strip() == "no torch"


def test_numpy_reference_on_arm_matches_stored_vector(arm_python):
    path = REPO_ROOT / "tests" / "vectors" / "groups_4.npz"
    code = (
        "import sys, numpy as np\n"
        "from lbdeploy.ops.vectors import load\n"
        "from lbdeploy.ops.ternary_conv import ternary_conv_reference\n"
        "case, a = load(sys.argv[1])\n"
        "y = ternary_conv_reference(a['x'], a['w_packed'], a['scale'], a['bias'], case.attrs())\n"
        "print(float(np.abs(y - a['y']).max()))\n"
    )
    done = run_arm_python(["-c", code, str(path)])
    assert float(done.stdout.strip()) <= 1e-6


def test_standard_conv_on_arm_onnxruntime_matches_every_vector(arm_python, tmp_path):
    # a dense Conv reads NaN/inf under zero weights too (docs/ops/TernaryConv.md): only the op must match that vector
    cases = [load(path) for path in VECTORS if path.stem != "non_finite_relu"]
    runs = [
        OnnxRun(standard_conv_model(case, arrays, tmp_path / f"{case.name}.onnx"), {"x": arrays["x"]})
        for case, arrays in cases
    ]
    assert_vectors_match(run_onnx_emulated(runs), cases)


def _kernel_library(arch: str) -> Path:
    """Our ONNX Runtime TernaryConv library for `arch` (cross-compiled for aarch64; cached)."""
    from lbdeploy.kernels.build import build_ort_library

    return build_ort_library(arch=arch)


def test_ternary_conv_kernels_on_arm_onnxruntime_match_every_vector(arm_python, tmp_path):
    library = _kernel_library("aarch64")
    cases = [load(path) for path in VECTORS]
    runs = [
        OnnxRun(ternary_conv_model(case, arrays, tmp_path / f"{case.name}.onnx"), {"x": arrays["x"]})
        for case, arrays in cases
    ]
    assert_vectors_match(run_onnx_emulated(runs, library=library), cases)


# The quantized op: every q_ vector plus a map large enough for the NEON kernel's wide tiles.
Q_LARGE = ("q_lane_40x37", dict(n=1, cin=20, cout=9, h=40, w=37, x_zero_point=17, y_zero_point=90))


def test_qternary_conv_kernels_on_arm_onnxruntime_match_every_q_vector(arm_python, tmp_path):
    from lbdeploy.ops.qternary_conv import QKERNEL_TOLERANCE
    from lbdeploy.ops.qvectors import QVectorCase, generate, load_case, stored_paths, vector_model

    library = _kernel_library("aarch64")
    cases = [load_case(path) for path in stored_paths()]
    large = QVectorCase(Q_LARGE[0], **Q_LARGE[1])
    cases.append((large, generate(large)))
    runs, checks = [], []
    for case, arrays in cases:  # both layouts: the NEON tiles, epilogue and channels-last copy
        for layout in ("NCHW", "NHWC"):
            model = vector_model(case, arrays, batch="N", layout=layout)
            path = _save(model, tmp_path / f"{case.name}-{layout}.onnx")
            x, want = arrays["x"], arrays["y"]
            if layout == "NHWC":
                x, want = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), want.transpose(0, 2, 3, 1)
            runs.append(OnnxRun(path, {"X": x}))
            checks.append((case.name + " " + layout, want))
    outputs = run_onnx_emulated(runs, library=library)
    failures = []
    for result, (name, want) in zip(outputs, checks):
        got = result["Y"]
        diff = np.abs(got.astype(np.int32) - want.astype(np.int32)) if got.shape == want.shape else None
        if got.dtype != np.uint8 or diff is None or diff.max() > QKERNEL_TOLERANCE:
            failures.append(f"{name}: {got.dtype} {got.shape}, max |diff| {None if diff is None else diff.max()}")
    assert not failures, "aarch64 QTernaryConv results differ from the reference:\n" + "\n".join(failures)


@pytest.mark.tvm
def test_tvm_module_cross_compiled_for_aarch64_runs_in_the_lane(arm_python, tmp_path):
    tvm = pytest.importorskip("tvm", reason="cross-compiling needs apache-tvm on the host")
    from tvm import relax
    from tvm.script import relax as R

    builder = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((4, 8), "float32"))
    with builder.function("main", [x]):
        with builder.dataflow():
            shifted = builder.emit(relax.op.add(x, relax.const(1.0, "float32")))
            out = builder.emit_output(relax.op.nn.relu(shifted))
        builder.emit_func_output(out)
    target = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    tvm.compile(builder.get(), target=target).export_library(str(tmp_path / "m.so"), cc="aarch64-linux-gnu-g++")
    code = (
        "import sys, numpy as np, tvm\n"
        "from tvm import relax\n"
        "vm = relax.VirtualMachine(tvm.runtime.load_module(sys.argv[1]), tvm.cpu())\n"
        "x = np.arange(-16, 16, dtype='float32').reshape(4, 8)\n"
        "print(np.abs(vm['main'](tvm.runtime.tensor(x)).numpy() - np.maximum(x + 1, 0)).max())\n"
    )
    done = run_arm_python(["-c", code, str(tmp_path / "m.so")])
    assert float(done.stdout.strip()) == 0.0


def _ternary_artifact(folder: Path, library: Path) -> tuple[Path, dict]:
    """An ONNX Runtime artifact (docs/artifact.md) of the basic_3x3 vector's TernaryConv with `library`."""
    case, arrays = load(REPO_ROOT / "tests" / "vectors" / "basic_3x3.npz")
    model = onnx.load(ternary_conv_model(case, arrays, folder.parent / "ternary.onnx"))
    manifest = {
        **pool_manifest(),
        "arch": "ternary-conv-test", "ops": "custom", "target": "rpi",
        "input": {"name": "x", "shape": ["N", case.cin, case.h, case.w], "layout": "NCHW", "dtype": "float32"},
        "outputs": [{"name": "y", "shape": ["N", case.cout, case.h, case.w], "final": True}],
        "pose": {"joints": [f"j{index}" for index in range(case.cout)], "flip_pairs": [], "skeleton": [],
                 "heatmap_stride": 1},  # one joint name per output channel (the manifest check)
        "custom_ops": [{"domain": DOMAIN, "op_type": "TernaryConv", "version": OP_VERSION}],
        "kernel_library": {"path": "kernels/libternary_ort.so", "arch": "aarch64"},
    }
    extra = {"kernels/libternary_ort.so": Path(library).read_bytes()}
    return write_artifact(folder, model, manifest, extra_files=extra), arrays


def test_standard_op_artifact_runs_on_arm_like_on_x86(arm_python, tmp_path):
    from lbdeploy.artifact import open_artifact
    from lbdeploy.runtime.backends import create_backend

    artifact = write_artifact(tmp_path / "artifact", pool_model(), pool_manifest())
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    expected = create_backend("auto", *open_artifact(artifact)).run({"image": x})
    outputs = run_artifact_emulated(artifact, tmp_path / "x.npy")
    assert set(outputs) == set(expected) == {"heatmaps_0", "heatmaps_1"}
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, **KERNEL_TOLERANCE)


def test_artifact_with_aarch64_kernels_runs_on_arm(arm_python, tmp_path):
    artifact, arrays = _ternary_artifact(tmp_path / "artifact", _kernel_library("aarch64"))
    outputs = run_artifact_emulated(artifact, arrays["x"])
    np.testing.assert_allclose(outputs["y"], arrays["y"], **KERNEL_TOLERANCE)


def test_artifact_with_x86_kernels_is_refused_by_the_arm_runtime(arm_python, tmp_path):
    artifact, arrays = _ternary_artifact(tmp_path / "artifact", _kernel_library("x86_64"))
    with pytest.raises(KernelLibraryError, match="built for x86_64.*aarch64 runtime"):
        run_artifact_emulated(artifact, arrays["x"])


DEMO_MODEL = REPO_ROOT / "lbdeploy" / "data" / "demo.pt"
SAMPLE_IMAGE = REPO_ROOT / "lbdeploy" / "data" / "sample.jpg"


@pytest.fixture(scope="module")
def demo_artifacts(tmp_path_factory):
    """The bundled demo LBRN-S exported twice with TernaryConv: for arm64 and for this x86 machine."""
    pytest.importorskip("torch", reason="exporting needs torch (pip install lbdeploy[torch])")
    from lbdeploy.exporters.export import export_model

    folder = tmp_path_factory.mktemp("demo")
    return {target: export_model(DEMO_MODEL, folder / target, target=target, kernels="ternary") and folder / target
            for target in ("arm64", "x86")}


def test_whole_lbrn_s_runs_on_arm_like_on_x86(arm_python, demo_artifacts, tmp_path):
    from lbdeploy.artifact import open_artifact
    from lbdeploy.runtime.backends import create_backend

    arm = demo_artifacts["arm64"]
    manifest = json.loads((arm / "manifest.json").read_text())
    assert manifest["kernel_library"]["arch"] == "aarch64" and manifest["custom_ops"]
    x = np.random.default_rng(1).standard_normal((2, 3, 128, 128)).astype(np.float32)
    expected = create_backend("auto", *open_artifact(demo_artifacts["x86"])).run({"image": x})
    outputs = run_artifact_emulated(arm, x)
    assert set(outputs) == set(expected)
    for name, value in expected.items():
        tolerance = 1e-5 + 1e-4 * float(np.abs(value).max())
        np.testing.assert_allclose(outputs[name], value, rtol=0, atol=tolerance)


def test_predictor_on_arm_returns_the_x86_keypoints(arm_python, demo_artifacts):
    from lbdeploy.runtime.predictor import Predictor

    expected = Predictor(demo_artifacts["x86"]).predict(str(SAMPLE_IMAGE))
    on_arm = predict_emulated(demo_artifacts["arm64"], SAMPLE_IMAGE)
    np.testing.assert_allclose(on_arm["keypoints"], expected.keypoints, atol=1e-3)
    np.testing.assert_allclose(on_arm["scores"], expected.scores, rtol=1e-4, atol=1e-5)
    assert on_arm["keypoints"].shape == (1, 16, 2)


@pytest.fixture(scope="module")
def demo_int8_artifacts(tmp_path_factory):
    """The demo LBRN-S quantized to int8 (QTernaryConv) for arm64 and for this x86 machine."""
    pytest.importorskip("torch", reason="exporting needs torch (pip install lbdeploy[torch])")
    from lbdeploy.exporters.export import export_model

    folder = tmp_path_factory.mktemp("demo-int8")
    return {target: export_model(DEMO_MODEL, folder / target, target=target, quantize="int8", kernels="ternary")
                    and folder / target
            for target in ("arm64", "x86")}


def test_int8_predictor_on_arm_finds_the_x86_keypoints(arm_python, demo_int8_artifacts):
    """The int8 artifact on an aarch64 board (NEON QTernaryConv) gives the x86 int8 keypoints: the integer
    sums are exact, so only a requantization tie (one LSB) may differ between the instruction sets."""
    from lbdeploy.runtime.predictor import Predictor

    arm = demo_int8_artifacts["arm64"]
    manifest = json.loads((arm / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["kernel_library"]["arch"] == "aarch64"
    assert any(op["op_type"] == "QTernaryConv" for op in manifest["custom_ops"])
    expected = Predictor(demo_int8_artifacts["x86"]).predict(str(SAMPLE_IMAGE))
    on_arm = predict_emulated(arm, SAMPLE_IMAGE)
    assert on_arm["keypoints"].shape == expected.keypoints.shape == (1, 16, 2)
    stride = manifest["pose"]["heatmap_stride"]
    close = np.linalg.norm(on_arm["keypoints"] - expected.keypoints, axis=-1) <= stride
    assert close.mean() >= 0.97, close
