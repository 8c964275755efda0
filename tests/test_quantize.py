"""int8 export (exporters.quantize, exporters.calibration, exporters.accuracy) and int8 artifacts at runtime.

Graph-structure tests need only onnxruntime.quantization; tests that run QTernaryConv in ONNX
Runtime skip with the reason when this machine's kernel library does not provide the op yet.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lbdeploy.errors import AccuracyError, CalibrationError, ConfigError, KernelLibraryError

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "lbdeploy" / "data" / "demo.pt"
SAMPLE = REPO / "lbdeploy" / "data" / "sample.jpg"
DEMO_SPEC = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def _demo():
    from lbdeploy.checkpoint import load_model

    return load_model(DEMO)


@pytest.fixture(scope="module")
def demo_images():
    from lbdeploy.exporters.calibration import CalibrationOptions, load_calibration

    return load_calibration(CalibrationOptions(images=8), (128, 128), DEMO_SPEC)


@pytest.fixture(scope="module")
def demo_int8(tmp_path_factory, demo_images):
    """The demo model's int8 graph (quantize_onnx), as an onnx.ModelProto."""
    import onnx

    from lbdeploy.exporters.quantize import quantize_onnx

    model, _ = _demo()
    path = tmp_path_factory.mktemp("int8") / "model.onnx"
    quantize_onnx(model, path, (128, 128), "pose", demo_images.calibration, "percentile", 18)
    return onnx.load(str(path))


def _runs_qternary(library: str) -> bool:
    """Whether ONNX Runtime with `library` runs a one-node QTernaryConv model."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from lbdeploy.ops.qonnx_schema import make_node
    from lbdeploy.ops.qternary_conv import OP_VERSION
    from lbdeploy.ops.ternary_conv import DOMAIN, TernaryConvAttrs
    from lbdeploy.runtime.backends.ort import session_options

    names = ["x", "xs", "xz", "w", "s", "b", "ys", "yz"]
    values = [np.float32(0.1), np.uint8(0), np.zeros((1, 3), np.uint8), np.ones(1, np.float32),
              np.zeros(1, np.float32), np.float32(0.1), np.uint8(0)]
    graph = helper.make_graph(
        [make_node(names, ["y"], TernaryConvAttrs((3, 3)))], "probe",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 1, 1, 1])],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in zip(names[1:], values)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, OP_VERSION)])
    try:
        ort.InferenceSession(model.SerializeToString(), session_options(1, library),
                             providers=["CPUExecutionProvider"]).run(None, {"x": np.ones((1, 1, 3, 3), np.uint8)})
    except Exception:  # ORT's own exception types: the op is not in the library
        return False
    return True


@pytest.fixture(scope="module")
def with_qternary(library):
    """The kernel library path; skips when it does not provide QTernaryConv (kernels not built yet)."""
    if not _runs_qternary(library):
        pytest.skip("this machine's kernel library does not provide ai.lbdeploy::QTernaryConv")
    return library


# --- graph structure -------------------------------------------------------------------------------


def _producers(model):
    graph = getattr(model, "graph", model)
    return {out: node for node in graph.node for out in node.output}


def test_every_ternary_conv_becomes_qternary_conv(demo_int8):
    ops = [node.op_type for node in demo_int8.graph.node]
    assert ops.count("QTernaryConv") == 17  # the demo's 17 ternary convs
    assert "BatchNormalization" not in ops and "Relu" not in ops
    assert any(op.domain == "ai.lbdeploy" for op in demo_int8.opset_import)


def test_no_float_detour_between_1x1_and_ternary_conv(demo_int8):
    from lbdeploy.exporters.quantize import requantize_pairs

    producers = _producers(demo_int8)
    consumers = {}
    for node in demo_int8.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    assert requantize_pairs(demo_int8) == []
    for node in (n for n in demo_int8.graph.node if n.op_type == "QTernaryConv"):
        # Channels-last for ONNX Runtime: a Transpose on each side, nothing else.
        assert {a.name: a.s for a in node.attribute}["layout"] == b"NHWC"
        to_nhwc = producers[node.input[0]]
        assert to_nhwc.op_type == "Transpose" and list(to_nhwc.attribute[0].ints) == [0, 2, 3, 1]
        before = producers[to_nhwc.input[0]]
        assert before.op_type == "QuantizeLinear"  # the 1x1 conv's Q: ORT fuses DQ->Conv->Q to QLinearConv
        assert producers[before.input[0]].op_type == "Conv"
        (to_nchw,) = consumers[node.output[0]]
        assert to_nchw.op_type == "Transpose" and list(to_nchw.attribute[0].ints) == [0, 3, 1, 2]
        for user in consumers[to_nchw.output[0]]:  # read back only by the next 1x1 conv's DQ
            assert user.op_type == "DequantizeLinear"
            assert {c.op_type for c in consumers[user.output[0]]} == {"Conv"}


def test_onnx_runtime_runs_the_ternary_layers_channels_last(demo_int8, with_qternary, tmp_path):
    # ORT's layout optimizer cancels the export's Transposes against its channels-last QLinearConvs:
    # no Transpose touches a QTernaryConv and every MaxPool runs channels-last (issue 23).
    import onnx
    import onnxruntime as ort

    from lbdeploy.runtime.backends.ort import session_options

    options = session_options(1, with_qternary)
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(demo_int8.SerializeToString(), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath).graph
    producers = _producers(graph)
    ternary = [n for n in graph.node if n.op_type == "QTernaryConv"]
    assert len(ternary) == 17
    for node in ternary:
        assert producers[node.input[0]].op_type == "QLinearConv" and producers[node.input[0]].domain == "com.microsoft"
        assert all(user.op_type != "Transpose" for user in graph.node if node.output[0] in user.input)
    assert not [n for n in graph.node if n.op_type == "MaxPool" and n.domain == ""]
    assert sum(n.op_type == "Transpose" for n in graph.node) <= 2  # the network's input and output


def test_real_layers_have_per_channel_int8_weights(demo_int8):
    from onnx import numpy_helper

    values = {init.name: init for init in demo_int8.graph.initializer}
    producers = _producers(demo_int8)
    convs = [node for node in demo_int8.graph.node if node.op_type == "Conv"]
    assert convs
    for conv in convs:
        weight_dq = producers[conv.input[1]]
        quantized = numpy_helper.to_array(values[weight_dq.input[0]])
        scale = numpy_helper.to_array(values[weight_dq.input[1]])
        assert quantized.dtype == np.int8 and scale.shape == (quantized.shape[0],)


def test_outputs_stay_float_and_input_float(demo_int8):
    producers = _producers(demo_int8)
    assert demo_int8.graph.input[0].type.tensor_type.elem_type == 1  # float32 image
    for output in demo_int8.graph.output:
        assert producers[output.name].op_type == "Conv"


def test_qternary_conv_carries_the_ternary_layer(demo_int8):
    from onnx import numpy_helper

    from lbdeploy.exporters.folding import prepare_for_export
    from lbdeploy.exporters.quantize import ternary_ops

    model, _ = _demo()
    ops = ternary_ops(prepare_for_export(model, "standard"))
    values = {init.name: numpy_helper.to_array(init) for init in demo_int8.graph.initializer}
    node = next(n for n in demo_int8.graph.node if n.name == "layer1.0.path.3/QTernaryConv")
    op = ops["model.layer1.0.path.3.dense_weight"]
    np.testing.assert_array_equal(values[node.input[3]], op.packed.numpy())
    np.testing.assert_array_equal(values[node.input[4]], op.scale.numpy())
    attrs = {a.name: a for a in node.attribute}
    assert attrs["activation"].s == b"relu" and list(attrs["pads"].ints) == [1, 1, 1, 1]


def test_batchnorm_as_conv_is_exact():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from lbdeploy.exporters.quantize import batchnorm_as_conv

    rng = np.random.default_rng(0)
    params = [rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, 4)]
    names = ["g", "b", "m", "v"]
    graph = helper.make_graph(
        [helper.make_node("BatchNormalization", ["x", *names], ["y"], name="bn", epsilon=1e-3)], "bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])],
        [numpy_helper.from_array(p.astype(np.float32), n) for p, n in zip(params, names)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.normal(size=(1, 4, 3, 3)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert batchnorm_as_conv(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv"]
    onnx.checker.check_model(model)
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)


# --- bad input -------------------------------------------------------------------------------------


def _write_images(folder: Path, count: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / f"im{i:03d}.png")


def test_folder_calibration_splits_calibration_and_held_out(tmp_path):
    from lbdeploy.exporters.calibration import GATE_IMAGES, CalibrationOptions, load_calibration

    _write_images(tmp_path / "imgs", 12)
    images = load_calibration(CalibrationOptions(str(tmp_path / "imgs"), images=4), (32, 32), DEMO_SPEC)
    assert images.calibration.shape == (4, 3, 32, 32) and images.held_out.shape == (min(8, GATE_IMAGES), 3, 32, 32)
    assert images.calibration.dtype == np.float32


@pytest.mark.parametrize("case, message", [
    ("empty", "has 0 images"),
    ("few", "has 5 images"),
    ("unreadable", "unreadable"),
    ("missing", "does not exist"),
])
def test_bad_calibration_data_is_one_line_error(tmp_path, case, message):
    from lbdeploy.exporters.calibration import CalibrationOptions, load_calibration

    folder = tmp_path / "imgs"
    folder.mkdir()
    if case == "few":
        _write_images(folder, 5)
    if case == "unreadable":
        _write_images(folder, 20)
        (folder / "im000.png").write_bytes(b"not a png")
    data = f"folder:{tmp_path / 'nowhere'}" if case == "missing" else f"folder:{folder}"
    with pytest.raises(CalibrationError, match=message) as err:
        load_calibration(CalibrationOptions(data, images=8), (32, 32), DEMO_SPEC)
    assert "\n" not in str(err.value)


def test_dataset_with_fewer_images_than_asked():
    from lbdeploy.exporters.calibration import CalibrationOptions, load_calibration

    with pytest.raises(CalibrationError, match="fewer than the 50 asked"):
        load_calibration(CalibrationOptions("synthetic:10,10", images=50), (32, 32), DEMO_SPEC)


def test_bad_options_are_config_errors():
    from lbdeploy.exporters.calibration import CalibrationOptions

    with pytest.raises(ConfigError, match="--calibration-method"):
        CalibrationOptions(method="kl").check()
    with pytest.raises(ConfigError, match="--calibration-images"):
        CalibrationOptions(images=0).check()


def test_overflowing_activations_are_refused():
    from onnx import TensorProto, helper, numpy_helper

    from lbdeploy.exporters.quantize import check_ranges

    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], name="q")], "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1])],
        [numpy_helper.from_array(np.array(np.inf, np.float32), "s"), numpy_helper.from_array(np.uint8(0), "z")])
    with pytest.raises(CalibrationError, match="overflows the int8 range"):
        check_ranges(helper.make_model(graph))


def test_cli_refuses_bad_calibration_and_writes_nothing(tmp_path):
    from lbdeploy.cli import main

    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["export", str(DEMO), "--quantize", "int8", "--calibration",
                                       f"folder:{tmp_path / 'empty'}", "-o", str(tmp_path / "out")])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 2 and len(errors) == 1 and errors[0].startswith("Error: calibration folder")
    assert result.output.rstrip().endswith("lower --calibration-images")  # the whole error is one line
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == [tmp_path / "empty"]


def test_int8_needs_a_backend_with_int8_graphs(tmp_path):
    """The backend registry says which backends run int8 graphs (ort, tvm); TensorRT is refused up front."""
    from lbdeploy.exporters.export import export_model

    with pytest.raises(ConfigError, match="--quantize int8 runs on the ort or tvm backend, not 'tensorrt'"):
        export_model(DEMO, tmp_path / "out", target="jetson-orin", backend="tensorrt", quantize="int8")
    assert not (tmp_path / "out").exists()


def test_int8_graph_without_kernel_library_is_refused(tmp_path, demo_int8):
    import onnx

    from lbdeploy.runtime.backends.ort import OrtBackend

    onnx.save(demo_int8, str(tmp_path / "model.onnx"))
    with pytest.raises(KernelLibraryError, match="ai.lbdeploy"):
        OrtBackend(tmp_path, {"custom_ops": []})


# --- accuracy gate ---------------------------------------------------------------------------------


def test_gate_counts_neighbours_and_near_ties():
    from lbdeploy.tasks.pose import keypoint_offsets, near_ties

    ref = np.zeros((1, 3, 8, 8))
    ref[0, :, 4, 4] = 1.0
    ref[0, 2, 0, 0] = 0.97  # a second mode within 5 % of the peak
    out = np.zeros_like(ref)
    out[0, 0, 5, 5] = 1.0  # diagonal neighbour: agrees
    out[0, 1, 7, 7] = 1.0  # far away, fp32 has nothing there: disagrees
    out[0, 2, 0, 0] = 1.0  # the other mode: a near-tie
    assert keypoint_offsets(ref, out).tolist() == [[1, 3, 4]]
    assert near_ties(ref, out).tolist() == [[False, False, True]]


def _export_demo(out: Path) -> dict:
    from lbdeploy.exporters.calibration import CalibrationOptions
    from lbdeploy.exporters.export import export_model

    return export_model(DEMO, out, target="x86", quantize="int8", calibration=CalibrationOptions(images=16),
                        kernels="ternary")


def test_gate_passes_on_demo_and_runtime_takes_the_artifact(tmp_path, with_qternary):
    from lbdeploy.runtime.predictor import Predictor

    manifest = _export_demo(tmp_path / "q")
    assert manifest["precision"] == "int8" and manifest["accuracy"]["passed"]
    assert manifest["accuracy"]["agreement"] >= 0.97 and manifest["accuracy"]["joints"] == 32 * 16
    assert manifest["custom_ops"][0]["op_type"] == "QTernaryConv"
    assert manifest["quantization"]["calibration"] == {"method": "percentile", "data": "synthetic", "images": 16,
                                                        "held_out_images": 32, "seed": 0}
    saved = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert saved["accuracy"] == manifest["accuracy"]
    result = Predictor(tmp_path / "q").predict(str(SAMPLE))
    reference = Predictor(DEMO).predict(str(SAMPLE))
    assert result.keypoints.shape == (1, 16, 2)
    close = np.abs(result.keypoints - reference.keypoints).max(-1) <= 4 * 1.0 * 256 / 128  # 1 heatmap px
    assert close.mean() >= 0.8


def test_gate_fails_on_sabotaged_model(tmp_path, with_qternary, demo_images):
    import onnx
    from onnx import numpy_helper

    from lbdeploy.exporters.accuracy import check_accuracy
    from lbdeploy.runtime.backends.ort import OrtBackend
    from lbdeploy.ops.qternary_conv import OP_TYPE, OP_VERSION
    from lbdeploy.ops.ternary_conv import DOMAIN

    model, _ = _demo()
    from lbdeploy.exporters.quantize import quantize_onnx

    quantize_onnx(model, tmp_path / "model.onnx", (128, 128), "pose", demo_images.calibration, "percentile", 18)
    graph = onnx.load(str(tmp_path / "model.onnx"))
    node = next(n for n in graph.graph.node if n.op_type == "QTernaryConv")
    scale = next(i for i in graph.graph.initializer if i.name == node.input[4])
    scale.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(scale), scale.name))  # one layer's sign flipped
    onnx.save(graph, str(tmp_path / "model.onnx"))
    backend = OrtBackend(tmp_path, {"custom_ops": [{"domain": DOMAIN, "op_type": OP_TYPE, "version": OP_VERSION}]},
                         custom_op_library=with_qternary)
    report = check_accuracy(model, lambda x: backend.run({"image": x}), ["heatmaps_0"], "pose",
                            demo_images.held_out, "ort")
    assert not report.passed and report.agreement < 0.97


def test_cli_export_fails_gate_and_writes_nothing(tmp_path, monkeypatch):
    """A failed accuracy gate fails the export like parity (exit 2, nothing written); --no-verify keeps
    the artifact and records the failure. The gate is made unpassable (agreement > 100 %)."""
    import lbdeploy.exporters.accuracy
    from lbdeploy.cli import main

    monkeypatch.setattr(lbdeploy.exporters.accuracy, "MIN_AGREEMENT", 1.01)
    runner = CliRunner()
    assert runner.invoke(main, ["create", "shn", "--stacks", "1", "--feats", "32", "--input-size", "64",
                                "-o", str(tmp_path / "shn.pt")]).exit_code == 0
    command = ["export", str(tmp_path / "shn.pt"), "--quantize", "int8", "--calibration-images", "8"]
    result = runner.invoke(main, [*command, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "accuracy gate" in result.output and not (tmp_path / "out").exists()
    kept = runner.invoke(main, [*command, "--no-verify", "-o", str(tmp_path / "kept")])
    assert kept.exit_code == 0 and "accuracy FAILED (kept: --no-verify)" in kept.output
    assert json.loads((tmp_path / "kept" / "manifest.json").read_text())["accuracy"]["passed"] is False


@pytest.mark.slow
def test_eval_pckh_drop_within_one_point(tmp_path, with_qternary):
    """`lbdeploy eval` of the demo model and its int8 artifact on the synthetic val set (500 people: on
    100 the drop moves by about a point from sample noise alone; ~10 min on the 2-core VM)."""
    from lbdeploy.cli import main

    _export_demo(tmp_path / "q")
    result = CliRunner().invoke(main, ["eval", str(DEMO), str(tmp_path / "q"), "--data", "synthetic", "--json"])
    assert result.exit_code == 0, result.output
    results = json.loads(result.output[result.output.index("{"):])["results"]
    torch_pck, int8_pck = (results[k]["groups"]["Total"] for k in ("torch:demo.pt", "ort:q"))
    assert torch_pck - int8_pck <= 1.0


def test_runtime_takes_a_dense_int8_artifact(tmp_path):
    """SHN quantizes to plain QDQ (no custom op): Predictor and `lbdeploy infer` run it with no new flag.
    (Untrained, so the gate's verdict is only recorded: --no-verify.)"""
    from lbdeploy.cli import main
    from lbdeploy.runtime.predictor import Predictor

    runner = CliRunner()
    assert runner.invoke(main, ["create", "shn", "--stacks", "1", "--feats", "32", "--input-size", "64",
                                "-o", str(tmp_path / "shn.pt")]).exit_code == 0
    result = runner.invoke(main, ["export", str(tmp_path / "shn.pt"), "--quantize", "int8", "--no-verify",
                                  "--calibration-images", "8", "-o", str(tmp_path / "q")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["custom_ops"] == [] and "accuracy" in manifest
    assert manifest["quantization"]["batchnorms_as_conv"] > 0
    pose = Predictor(tmp_path / "q").predict(str(SAMPLE))
    assert pose.keypoints.shape == (1, 16, 2) and np.isfinite(pose.keypoints).all()
    infer = runner.invoke(main, ["infer", str(tmp_path / "q"), str(SAMPLE), "--detector", "none",
                                 "--json", str(tmp_path / "pose.json")])
    assert infer.exit_code == 0, infer.output
    assert len(json.loads((tmp_path / "pose.json").read_text())["images"][0]["people"]) == 1
