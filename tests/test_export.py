"""`lbdeploy export`: ONNX with TernaryConv, atomic artifact folders, manifest, and the parity gate."""

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from lbdeploy.cli import main
from lbdeploy.exporters import parity
from lbdeploy.exporters.export import export_model
from lbdeploy.exporters.onnx import check_onnx
from lbdeploy.artifact import file_sha256
from lbdeploy.checkpoint import save_checkpoint
from lbdeploy.errors import ConfigError, ExportError, KernelLibraryError, ParityError, TernaryWeightError
from lbdeploy.models import build_model, get_preset, list_models
from lbdeploy.ops.onnx_schema import make_node
from lbdeploy.ops.vectors import load

# Tracing to ONNX costs ~20 ms a node, most of an export's time: the small models keep every layer
# kind with fewer of each (two hourglass levels, not four). A pyramid block traces to ~60 nodes (an
# ordinary bottleneck to ~10): one stack of those.
SMALL = {"stacks": 2, "depth": 2, "input_size": (64, 64)}
SMALL_SALIENCY = {"width": 4, "channels": 4, "input_size": (64, 64)}  # CPD / CPD-LB presets
SMALL_PYRAMID = {"stacks": 1, "depth": 2, "input_size": (64, 64)}


def _small(name: str) -> dict:
    """The small overrides of preset `name` (the layer kinds stay, fewer of them)."""
    config = get_preset(name).config
    if name.startswith("resnet"):
        return {}
    if "backbone" in config:
        return SMALL_SALIENCY
    return SMALL_PYRAMID if config.get("pyramid") else SMALL


def _checkpoint(tmp_path, name, **overrides):
    """model.pt of preset `name`, small (`_small`) unless overridden. Seeded: the same preset and
    overrides give the same network, so tests that export it share one trace (the trace cache)."""
    import torch

    kwargs = {**_small(name), **overrides}
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / f"{name}.pt", build_model(name, **kwargs))


@pytest.mark.parametrize("name", list_models())
def test_every_preset_exports_and_passes_parity(tmp_path, name):
    """Each preset's layer kinds export and pass the gate (one stack: further stacks repeat its kinds)."""
    one_stack = {"stacks": 1} if "stacks" in get_preset(name).config else {}
    manifest = export_model(_checkpoint(tmp_path, name, **one_stack), tmp_path / "out", target="onnx", kernels="ternary")
    assert manifest["parity"]["passed"]
    model = onnx.load(tmp_path / "out" / "model.onnx")
    check_onnx(model)
    ops = Counter(node.op_type for node in model.graph.node)
    has_ternary = name not in ("shn", "prm", "resnet56", "lbrn-1", "cpd")
    assert (ops["TernaryConv"] > 0) == has_ternary
    assert "BatchNormalization" not in ops or ops["BatchNormalization"] < ops["Conv"] + ops["TernaryConv"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert manifest["kernel_library"] if has_ternary else manifest["kernel_library"] is None


def test_manifest_contents_and_checksums(tmp_path):
    manifest = export_model(_checkpoint(tmp_path, "lbrn-s"), tmp_path / "out", target="x86", kernels="ternary")
    saved = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert saved == manifest
    for key in ("format_version", "arch", "config", "input", "outputs", "pose", "target", "backend", "opset",
                "custom_ops", "files", "tools", "parity"):
        assert key in saved, key
    assert saved["input"]["shape"] == ["N", 3, 64, 64] and saved["input"]["layout"] == "NCHW"
    assert [o["final"] for o in saved["outputs"]] == [False, True]
    assert saved["pose"]["heatmap_stride"] == 4 and len(saved["pose"]["flip_pairs"]) == 6
    assert saved["custom_ops"] == [{"domain": "ai.lbdeploy", "op_type": "TernaryConv", "version": 1}]
    assert saved["kernel_library"] == {"path": "kernels/libternary_ort.so", "arch": "x86_64"}
    assert set(saved["files"]) == {"model.onnx", "kernels/libternary_ort.so", "reference/inputs.npy",
                                   "reference/reference.npy", "reference/float32_reference.npy"}
    for rel, digest in saved["files"].items():
        assert file_sha256(tmp_path / "out" / rel) == digest
    report = saved["parity"]
    assert report["keypoint_agreement"] == 1.0 and all(o["worst_ratio"] <= 1 for o in report["outputs"])


@pytest.fixture(scope="module")
def one_stack_artifact(tmp_path_factory) -> Path:
    """A 1-stack LBRN-S exported for the default target, shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp("one-stack")
    export_model(_checkpoint(tmp, "lbrn-s", stacks=1), tmp / "out", kernels="ternary")
    return tmp / "out"


def test_ternary_node_attributes(one_stack_artifact):
    model = onnx.load(one_stack_artifact / "model.onnx")
    nodes = [n for n in model.graph.node if n.op_type == "TernaryConv"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert nodes[0].domain == "ai.lbdeploy"
    # nodes are named after the (folded) module that made them, uniquely, for readable profiles
    assert nodes[0].name == "layer1.0.path.3/TernaryConv"
    assert len({n.name for n in model.graph.node}) == len(model.graph.node)
    assert attrs["kernel_shape"] == [3, 3] and attrs["pads"] == [1, 1, 1, 1]
    assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b""
    # the BN + ReLU after every 3x3 ternary conv of an LBB is fused into the op
    assert all(onnx.helper.get_attribute_value(a) == b"relu" for n in nodes for a in n.attribute if a.name == "activation")
    # weights packed 2 bits each: [Cout, ceil(Cin * 3 * 3 / 4)] uint8
    inferred = onnx.shape_inference.infer_shapes(model)
    channels = {v.name: v.type.tensor_type.shape.dim[1].dim_value for v in inferred.graph.value_info
                if len(v.type.tensor_type.shape.dim) == 4}
    weights = {i.name: i for i in model.graph.initializer}
    for node in nodes:
        packed = weights[node.input[1]]
        assert packed.data_type == onnx.TensorProto.UINT8
        assert packed.dims[1] == -(-channels[node.input[0]] * 9 // 4)


def test_standard_ops_need_no_kernel_library(tmp_path):
    manifest = export_model(_checkpoint(tmp_path, "lbrn-s"), tmp_path / "out", ops="standard")
    model = onnx.load(tmp_path / "out" / "model.onnx")
    assert not any(n.op_type == "TernaryConv" for n in model.graph.node)
    assert manifest["custom_ops"] == [] and manifest["kernel_library"] is None and manifest["parity"]["passed"]
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    out = session.run(None, {"image": np.zeros((3, 3, 64, 64), np.float32)})
    assert out[-1].shape == (3, 16, 16, 16)


def test_plain_onnx_runtime_gets_our_error(one_stack_artifact):
    from lbdeploy.runtime.backends.ort import OrtBackend

    with pytest.raises(KernelLibraryError, match="ai.lbdeploy::TernaryConv"):
        OrtBackend(one_stack_artifact, {"custom_ops": []})


def test_interrupted_export_leaves_nothing(tmp_path):
    ckpt = _checkpoint(tmp_path, "lbrn-s", stacks=1)

    def interrupt(message):
        if message.startswith("parity gate"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_model(ckpt, tmp_path / "out", progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lbrn-s.pt"]


def test_parity_failure_is_fatal_unless_no_verify(tmp_path, monkeypatch):
    ckpt = _checkpoint(tmp_path, "lbrn-s", stacks=1)
    monkeypatch.setattr(parity, "RTOL", 0.0)
    monkeypatch.setattr(parity, "ATOL", 0.0)
    monkeypatch.setattr(parity, "NOISE_FACTOR", 0.0)
    with pytest.raises(ParityError, match="beyond tolerance"):
        export_model(ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    manifest = export_model(ckpt, tmp_path / "out", verify=False)
    assert not manifest["parity"]["passed"] and (tmp_path / "out" / "manifest.json").exists()


def test_existing_folder_needs_force(tmp_path):
    ckpt = _checkpoint(tmp_path, "resnet-lbb-56")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="--force"):
        export_model(ckpt, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    # --force replaces only an artifact or an empty folder: a user's folder is never deleted (issue 14)
    with pytest.raises(ExportError, match="not an lbdeploy artifact"):
        export_model(ckpt, tmp_path / "out", force=True)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    (tmp_path / "out" / "keep.txt").unlink()
    export_model(ckpt, tmp_path / "out", force=True)
    assert (tmp_path / "out" / "model.onnx").exists()
    # a file the manifest does not list makes it a user's folder again (issue 24, 2): refused, kept
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="notes.txt"):
        export_model(ckpt, tmp_path / "out", force=True)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    (tmp_path / "out" / "notes.txt").unlink()
    before = (tmp_path / "out" / "manifest.json").stat().st_ino
    export_model(ckpt, tmp_path / "out", force=True)  # exactly an artifact: replaced as a whole
    assert (tmp_path / "out" / "manifest.json").stat().st_ino != before


def test_unknown_target_or_backend(tmp_path):
    ckpt = _checkpoint(tmp_path, "resnet-lbb-56")
    with pytest.raises(ConfigError, match="supports --backend"):
        export_model(ckpt, tmp_path / "out", target="onnx", backend="tvm")


def test_saliency_manifest_and_parity(tmp_path):
    # our op everywhere: with --kernels auto, the measured choice may make every layer dense
    manifest = export_model(_checkpoint(tmp_path, "cpd-lb"), tmp_path / "out", target="x86", kernels="ternary")
    assert manifest["task"] == "saliency" and "pose" not in manifest
    assert manifest["outputs"] == [{"name": "saliency", "shape": ["N", 1, 64, 64], "final": True}]
    assert manifest["saliency"] == {"output_activation": "sigmoid", "map_size": [64, 64]}
    assert manifest["input"]["shape"] == ["N", 3, 64, 64] and manifest["custom_ops"]
    report = manifest["parity"]
    assert report["passed"] and report["saliency_agreement"] == 1.0 and report["top1_agreement"] is None
    assert report["saliency_prob_worst_ratio"] <= 1.0


def _saliency_compare(reference, output):
    return parity.compare({"saliency": reference}, {"saliency": reference}, {"saliency": output}, "saliency", "test",
                          {})


def test_saliency_parity_is_per_pixel():
    logits = np.random.default_rng(0).normal(0.0, 4.0, (2, 1, 16, 16))
    assert _saliency_compare(logits, logits + 1e-6).passed
    logits[0, 0, 3, 5] = 3.0
    flipped = logits.copy()
    flipped[0, 0, 3, 5] = -3.0  # one pixel on the wrong side of 0.5
    report = _saliency_compare(logits, flipped)
    assert not report.passed and report.saliency_agreement == 1.0 - 1.0 / logits.size
    ties = np.zeros((1, 1, 4, 4))  # every pixel at 0.5: any side is a tie
    tied = _saliency_compare(ties, ties + np.where(np.arange(16).reshape(1, 1, 4, 4) % 2, 5e-7, -5e-7))
    assert tied.passed and tied.saliency_agreement == 1.0
    # the probability tolerance is the logit one / 4 (issue 24, 13): a logit error within tolerance near 0.5,
    # > 1e-3 in probability, passes; one beyond it fails both checks
    big = np.full((1, 1, 4, 4), 60.0)
    big[0, 0, 0, 0] = 0.5
    tolerance = parity.map_tolerance(big, big)[0, 0, 0, 0]
    shifted = big.copy()
    shifted[0, 0, 0, 0] += 0.9 * tolerance
    report = _saliency_compare(big, shifted)
    assert report.passed and report.saliency_max_prob_error > 1e-3 and report.saliency_prob_worst_ratio <= 1.0
    shifted[0, 0, 0, 0] = big[0, 0, 0, 0] + 1.5 * tolerance
    report = _saliency_compare(big, shifted)
    assert not report.outputs[0].passed and report.saliency_prob_worst_ratio > 1.0 and not report.passed


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None, reason="aarch64 cross compiler not installed")
def test_arm64_saliency_artifact_runs_in_the_emulated_lane_like_on_x86(tmp_path, arm_python, library):
    """The arm64 artifact's graph gives the same map under qemu with the aarch64 kernels as on x86
    with this machine's (the graph is the same file; only the kernel library differs)."""
    from lbdeploy.runtime.backends.ort import OrtBackend
    from lbdeploy.runtime.testing.arm_lane import run_artifact_emulated

    arm = export_model(_checkpoint(tmp_path, "cpd-lb"), tmp_path / "arm", target="arm64")
    assert arm["task"] == "saliency" and arm["kernel_library"]["arch"] == "aarch64" and arm["parity"]["passed"]
    assert arm["custom_ops"]  # some layers run our kernels
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    on_x86 = OrtBackend(tmp_path / "arm", {**arm, "kernel_library": None}, custom_op_library=library)
    expected = on_x86.run({"image": x})["saliency"]
    on_arm = run_artifact_emulated(tmp_path / "arm", x)["saliency"]
    np.testing.assert_allclose(on_arm, expected, rtol=0, atol=1e-5 + 1e-4 * float(np.abs(expected).max()))


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None, reason="aarch64 cross compiler not installed")
def test_arm64_artifact_carries_aarch64_library(tmp_path):
    from lbdeploy.kernels.elf import elf_arch

    manifest = export_model(_checkpoint(tmp_path, "lbrn-s", stacks=1), tmp_path / "out", target="arm64")
    assert manifest["kernel_library"]["arch"] == "aarch64"
    assert elf_arch(tmp_path / "out" / "kernels" / "libternary_ort.so") == "aarch64"
    assert manifest["parity"]["passed"] and manifest["parity"]["backend"] == "ort (this machine)"
    from lbdeploy.runtime.backends.ort import OrtBackend

    with pytest.raises(KernelLibraryError, match="built for aarch64"):
        OrtBackend(tmp_path / "out", manifest)


def test_cli_export(tmp_path, library):
    ckpt = _checkpoint(tmp_path, "resnet-lbb-56")
    result = CliRunner().invoke(main, ["export", str(ckpt), "--target", "x86", "-o", str(tmp_path / "cli-out")])
    assert result.exit_code == 0, result.output
    assert "parity passed" in result.output and (tmp_path / "cli-out" / "manifest.json").is_file()
    assert "building the ONNX Runtime kernel library" not in result.output  # `library` put it in the cache
    again = CliRunner().invoke(main, ["export", str(ckpt), "-o", str(tmp_path / "cli-out")])
    assert again.exit_code == 2 and "already exists" in again.output


@pytest.mark.slow
def test_paper_size_lbrn_s_exports(tmp_path):
    """8 stacks at 256x256 through our op everywhere (the per-layer choice is tested on small models)."""
    ckpt = save_checkpoint(tmp_path / "m.pt", build_model("lbrn-s"))
    manifest = export_model(ckpt, tmp_path / "out", target="x86", kernels="ternary")
    assert manifest["parity"]["passed"] and len(manifest["outputs"]) == 8


@pytest.mark.parametrize("name", ["code3_weight", "code3_padding"])
def test_check_onnx_refuses_invalid_packed_weights(name):
    """The exporter's (and build-engine's) check of TernaryConv initializers, on the shared invalid vectors."""
    case, a = load(Path(__file__).parent / "vectors" / "invalid" / f"{name}.npz")
    inits = [numpy_helper.from_array(a[k], n) for k, n in (("w_packed", "w"), ("scale", "scale"), ("bias", "bias"))]
    graph = helper.make_graph([make_node(["x", "w", "scale", "bias"], ["y"], case.attrs())], "t",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(a["x"].shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.lbdeploy", 1)])
    with pytest.raises(TernaryWeightError, match="invalid 2-bit code 3"):
        check_onnx(model)


@pytest.mark.parametrize("opset", ["99", "16", "0"])
def test_opset_outside_what_the_exporter_writes_is_refused(tmp_path, opset):
    result = CliRunner().invoke(main, ["export", str(_checkpoint(tmp_path, "lbrn-s", stacks=1)), "-o",
                                       str(tmp_path / "out"), "--opset", opset])
    assert result.exit_code == 2 and f"--opset {opset} is not one the exporter writes" in result.output
    assert not (tmp_path / "out").exists()
