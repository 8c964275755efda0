"""The Predictor end to end on real ONNX Runtime sessions: geometry, batching, flip, checksums,
kernel-library refusals, the torch-free import path, and torch vs ORT parity on an LBRN model."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lbdeploy.errors import ArtifactError, ConfigError, InputError, KernelLibraryError
from lbdeploy.kernels.elf import host_arch
from runtime_artifacts import STRIDE, dot_image, pool_manifest, pool_model, write_artifact

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from lbdeploy.runtime.predictor import Predictor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pool_artifact(tmp_path_factory):
    return write_artifact(tmp_path_factory.mktemp("pool"), pool_model(), pool_manifest())


def _copy(artifact, tmp_path):
    return Path(shutil.copytree(artifact, tmp_path / "copy"))


# --- geometry through the whole pipeline ----------------------------------------------------------

def test_whole_image_keypoints_land_on_the_dots(pool_artifact):
    predictor = Predictor(pool_artifact, backend="ort", threads=1)
    image = dot_image(128, 96, {0: (30, 40), 1: (100, 20), 2: (64, 80)})
    result = predictor.predict(image)
    assert result.keypoints.shape == (1, 3, 2) and result.scores.shape == (1, 3)
    # whole 128-px width -> 64-px crop: one heatmap pixel is 8 image pixels
    np.testing.assert_allclose(result.keypoints[0], [[30, 40], [100, 20], [64, 80]], atol=8)
    assert result.image_size == (128, 96) and np.all(result.scores > 0)


def test_boxes_are_batched_and_match_single_predictions(pool_artifact):
    predictor = Predictor(pool_artifact)
    image = dot_image(200, 160, {0: (40, 50), 1: (150, 120)})
    boxes = [(20, 30, 40, 40), (120, 90, 60, 60), (0, 0, 200, 160)]
    together = predictor.predict(image, boxes=boxes)
    assert together.keypoints.shape == (3, 3, 2)
    for i, box in enumerate(boxes):
        alone = predictor.predict(image, boxes=[box])
        np.testing.assert_allclose(together.keypoints[i], alone.keypoints[0], atol=1e-4)
        np.testing.assert_allclose(together.scores[i], alone.scores[0], atol=1e-6)
    np.testing.assert_allclose(together.keypoints[0, 0], (40, 50), atol=50 * 1.25 / 64 * STRIDE)
    np.testing.assert_allclose(together.keypoints[1, 1], (150, 120), atol=75 * 1.25 / 64 * STRIDE)


def test_center_scale_input_equals_the_equivalent_box(pool_artifact):
    predictor = Predictor(pool_artifact)
    image = dot_image(100, 100, {0: (50, 40)})
    by_box = predictor.predict(image, boxes=[(20, 20, 60, 60)])
    by_cs = predictor.predict(image, center_scale=[((50, 50), 60 * 1.25 / 200)])
    np.testing.assert_allclose(by_box.keypoints, by_cs.keypoints, atol=1e-4)
    flat = predictor.predict(image, center_scale=[(50, 50, 60 * 1.25 / 200)])
    np.testing.assert_allclose(flat.keypoints, by_cs.keypoints)


def test_flip_test_averages_the_mirrored_crop(pool_artifact):
    predictor = Predictor(pool_artifact)
    image = dot_image(128, 128, {0: (30, 64), 1: (90, 40), 2: (70, 100)})
    plain = predictor.predict(image, return_heatmaps=True)
    flipped = predictor.predict(image, flip=True, return_heatmaps=True)
    assert flipped.heatmaps.shape == plain.heatmaps.shape == (1, 3, 16, 16)
    # The mirrored crop is mirrored back: the same dots, a heatmap pixel (8 image pixels) at most apart.
    np.testing.assert_allclose(flipped.keypoints, plain.keypoints, atol=8)
    assert not np.allclose(flipped.heatmaps, plain.heatmaps)  # the sub-pixel realignment changed the maps


def test_fixed_batch_artifacts_are_run_in_chunks(tmp_path):
    artifact = write_artifact(tmp_path / "b1", pool_model(batch=1), pool_manifest(batch=1))
    predictor = Predictor(artifact)
    image = dot_image(64, 64, {0: (20, 20)})
    result = predictor.predict(image, boxes=[(0, 0, 64, 64)] * 3, flip=True)
    assert result.keypoints.shape == (3, 3, 2)
    np.testing.assert_allclose(result.keypoints[0], result.keypoints[2])


def test_returned_heatmaps_are_the_final_output(pool_artifact):
    result = Predictor(pool_artifact).predict(dot_image(64, 64, {2: (32, 32)}), return_heatmaps=True)
    assert result.heatmaps.max() > 0  # heatmaps_0 (not final) is the negated map


@pytest.mark.parametrize("kwargs", [{"boxes": [(0, 0, 10)]}, {"boxes": []}, {"boxes": [(0, 0, 0, 5)]},
                                    {"boxes": [(0, 0, 5, 5)], "center_scale": [(1, 1, 1)]},
                                    {"center_scale": [("a", 1)]}])
def test_malformed_people_are_refused(pool_artifact, kwargs):
    with pytest.raises(InputError):
        Predictor(pool_artifact).predict(dot_image(32, 32, {}), **kwargs)


def test_max_pixels_is_enforced(pool_artifact):
    with pytest.raises(InputError, match="above the limit"):
        Predictor(pool_artifact, max_pixels=100).predict(dot_image(32, 32, {}))


# --- artifact integrity -----------------------------------------------------------------------------

def test_a_modified_model_file_is_refused(pool_artifact, tmp_path):
    artifact = _copy(pool_artifact, tmp_path)
    with open(artifact / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match="modified"):
        Predictor(artifact)


def test_a_missing_file_is_refused(pool_artifact, tmp_path):
    artifact = _copy(pool_artifact, tmp_path)
    (artifact / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        Predictor(artifact)


@pytest.mark.parametrize("change", [
    {"format_version": 99}, {"format": "something-else"}, {"outputs": [{"name": "x", "final": False}]},
    {"files": {"../outside.bin": "0" * 64}},
], ids=["version", "format", "no-final", "escape"])
def test_bad_manifests_are_refused(pool_artifact, tmp_path, change):
    artifact = _copy(pool_artifact, tmp_path)
    manifest = json.loads((artifact / "manifest.json").read_text())
    (artifact / "manifest.json").write_text(json.dumps({**manifest, **change}))
    with pytest.raises(ArtifactError):
        Predictor(artifact)


def test_missing_or_broken_manifest_and_missing_path(tmp_path):
    with pytest.raises(ArtifactError, match="no manifest.json"):
        Predictor(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Predictor(tmp_path)
    with pytest.raises(ArtifactError, match="does not exist"):
        Predictor(tmp_path / "nope")


def test_wrong_backend_for_the_source_is_a_config_error(pool_artifact):
    with pytest.raises(ConfigError):
        Predictor(pool_artifact, backend="torch")
    with pytest.raises(ConfigError):
        Predictor(pool_artifact, backend="nope")


# --- kernel library ---------------------------------------------------------------------------------

def _ternary_model():
    from onnx import numpy_helper

    from lbdeploy.ops.onnx_schema import make_node
    from lbdeploy.ops.ternary_conv import TernaryConvAttrs, pack_ternary

    node = make_node(["heatmaps_1", "w", "s", "b"], ["t"], TernaryConvAttrs(kernel_shape=(1, 1)))
    weights = pack_ternary(np.eye(3, dtype=np.int8).reshape(3, 3, 1, 1))
    initializers = [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.ones(3, np.float32), "s"),
                    numpy_helper.from_array(np.zeros(3, np.float32), "b")]
    return pool_model(extra_nodes=[node], initializers=initializers)


def _custom_manifest(library_path):
    return {**pool_manifest(), "ops": "custom",
            "custom_ops": [{"domain": "ai.lbdeploy", "op_type": "TernaryConv", "version": 1}],
            "kernel_library": {"path": library_path, "arch": "x86_64"} if library_path else None}


def test_ternary_graph_without_kernel_library_gets_our_error(tmp_path):
    artifact = write_artifact(tmp_path / "a", _ternary_model(), pool_manifest())
    with pytest.raises(KernelLibraryError, match="TernaryConv"):
        Predictor(artifact)


def test_missing_kernel_library_is_refused(tmp_path):
    artifact = write_artifact(tmp_path / "a", _ternary_model(), _custom_manifest(None))
    with pytest.raises(KernelLibraryError):
        Predictor(artifact)


def test_kernel_library_for_another_architecture_is_refused(tmp_path):
    # A minimal 64-bit little-endian ELF header whose e_machine is 183 (AArch64) or 62 (x86-64).
    machine = 62 if host_arch() == "aarch64" else 183
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + (3).to_bytes(2, "little") + machine.to_bytes(2, "little") + b"\0" * 44
    artifact = write_artifact(tmp_path / "a", _ternary_model(), _custom_manifest("kernels/libternary_ort.so"),
                              {"kernels/libternary_ort.so": header})
    with pytest.raises(KernelLibraryError, match="built for"):
        Predictor(artifact)


# --- footprint --------------------------------------------------------------------------------------

def test_ort_path_never_imports_torch(pool_artifact):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import lbdeploy.runtime
        from lbdeploy.runtime.predictor import Predictor
        result = Predictor({str(pool_artifact)!r}).predict(np.zeros((40, 50, 3), np.uint8), flip=True)
        assert result.keypoints.shape == (1, 3, 2)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tvm", "tensorrt", "onnx"))
        print("HEAVY", heavy)
        sys.exit(1 if heavy else 0)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


# --- torch checkpoints and torch vs ORT parity ------------------------------------------------------

@pytest.fixture(scope="module")
def small_lbrn(tmp_path_factory):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    from lbdeploy.checkpoint import save_checkpoint
    from lbdeploy.models import build_model

    torch.manual_seed(0)
    model = build_model("lbrn-s", stacks=2, feats=32, input_size=(64, 64), depth=2, seed=5)
    with torch.no_grad():  # random BatchNorm statistics so the heatmaps are not flat
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model, save_checkpoint(tmp_path_factory.mktemp("pt") / "model.pt", model)


def test_model_pt_runs_with_the_torch_backend(small_lbrn):
    _, path = small_lbrn
    predictor = Predictor(path)
    assert predictor.manifest["backend"] == "torch" and predictor.input_size == (64, 64)
    assert len(predictor.joint_names) == 16 and predictor.flip_pairs
    result = predictor.predict(dot_image(90, 120, {}), boxes=[(10, 10, 50, 80), (0, 0, 90, 120)], flip=True)
    assert result.keypoints.shape == (2, 16, 2) and np.isfinite(result.keypoints).all()
    with pytest.raises(ConfigError):
        Predictor(path, backend="ort")


def _compiler_or_skip():
    from lbdeploy.errors import KernelLibraryError
    from lbdeploy.kernels.build import compiler_for

    try:
        compiler_for(host_arch())
    except KernelLibraryError as err:
        pytest.skip(f"cannot build the TernaryConv kernel library here: {err}")


@pytest.mark.parametrize("ops", ["standard", "custom"])
def test_torch_and_ort_predictions_agree(small_lbrn, tmp_path, ops):
    """The same model.pt through the torch backend and through `lbdeploy export` + ONNX Runtime
    (plain Conv graph, or TernaryConv nodes run by our kernel library)."""
    pytest.importorskip("onnx", reason="onnx is needed to export")
    from lbdeploy.exporters.export import export_model

    if ops == "custom":
        _compiler_or_skip()
    _, path = small_lbrn
    manifest = export_model(path, tmp_path / "artifact", target="x86" if host_arch() == "x86_64" else "onnx", ops=ops,
                            kernels="ternary" if ops == "custom" else "auto")
    assert (manifest["kernel_library"] is not None) == (ops == "custom")
    torch_predictor, ort_predictor = Predictor(path), Predictor(tmp_path / "artifact")
    assert type(ort_predictor.backend).__name__ == "OrtBackend"
    image = (np.random.default_rng(3).random((120, 90, 3)) * 255).astype(np.uint8)
    boxes = [(10, 10, 50, 80), (30, 5, 40, 100)]
    a = torch_predictor.predict(image, boxes=boxes, flip=True, return_heatmaps=True)
    b = ort_predictor.predict(image, boxes=boxes, flip=True, return_heatmaps=True)
    np.testing.assert_allclose(a.heatmaps, b.heatmaps, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)


# --- lbdeploy infer ---------------------------------------------------------------------------------

def test_infer_command_writes_json_and_overlays(pool_artifact, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from lbdeploy.cli import main

    paths = []
    for i, dots in enumerate([{0: (30, 40), 1: (90, 70)}, {2: (60, 50)}]):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(dot_image(120, 100, dots)).save(paths[-1])
    out_json, draw_dir = tmp_path / "pose.json", tmp_path / "drawn"
    result = CliRunner().invoke(main, ["infer", str(pool_artifact), *map(str, paths), "--box", "0,0,120,100",
                                       "--flip", "--json", str(out_json), "--draw", str(draw_dir)])
    assert result.exit_code == 0, result.output
    document = json.loads(out_json.read_text())
    first = document["images"][0]
    assert first["joints"] == ["red", "green", "blue"] and first["width"] == 120
    keypoints = np.array(first["people"][0]["keypoints"]).reshape(3, 3)
    np.testing.assert_allclose(keypoints[0, :2], (30, 40), atol=10)
    np.testing.assert_allclose(keypoints[1, :2], (90, 70), atol=10)
    for path in paths:
        drawn = Image.open(draw_dir / f"{path.stem}.pose.png")
        assert drawn.size == (120, 100)
        assert np.asarray(drawn).any()  # dots and lines were drawn on the black image


def test_infer_command_single_draw_file_and_stdout(pool_artifact, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from lbdeploy.cli import main

    path = tmp_path / "img.png"
    Image.fromarray(dot_image(64, 64, {0: (20, 20), 1: (40, 40), 2: (30, 30)})).save(path)
    result = CliRunner().invoke(main, ["infer", str(pool_artifact), str(path), "--draw", str(tmp_path / "o.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o.png").is_file()
    assert '"images"' in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--box", "1,2,3"], "four numbers"), (["--backend", "torch"], "artifact folder"),
    (["--box", "0,0,1e308,1e308"], "w and h must be between"), (["--box", "0,0,1e400,5"], "non-finite"),
    (["--box", "nan,0,5,5"], "non-finite"), (["--box", "-2e6,0,5,5"], "x and y must be within"),
])
def test_infer_command_errors_are_one_line(pool_artifact, tmp_path, args, message):
    from click.testing import CliRunner
    from PIL import Image

    from lbdeploy.cli import main

    path = tmp_path / "img.png"
    Image.fromarray(dot_image(16, 16, {})).save(path)
    result = CliRunner().invoke(main, ["infer", str(pool_artifact), str(path), *args])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Infinity" not in result.output
