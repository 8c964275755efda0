"""Per-layer kernel choice (exporters.kernel_choice / kernel_forms), `lbdeploy tune` and the
`--ops` / `--kernels` combinations. Structure and values only: which form each layer has, what
the manifest records, that rewrites verify; never how fast anything ran."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
import onnx  # noqa: E402

from lbdeploy.artifact import file_sha256, open_artifact, record_files  # noqa: E402
from lbdeploy.backends import CUSTOM, STANDARD, BackendSpec, get_backend  # noqa: E402
from lbdeploy.cli import main  # noqa: E402
from lbdeploy.errors import ConfigError, ExportError  # noqa: E402
from lbdeploy.exporters.kernel_choice import choose_forms, layer_choices, resolve_ops  # noqa: E402
from lbdeploy.exporters.kernel_forms import list_layers, set_forms  # noqa: E402
from lbdeploy.kernels.elf import host_arch  # noqa: E402
from lbdeploy.targets import get_target  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "lbdeploy" / "data" / "demo.pt"
pytestmark = pytest.mark.skipif(host_arch() != "x86_64", reason="measures with the x86 kernel library")


def _forms_in_graph(path: Path) -> dict:
    """Layer name -> "ternary" / "dense" as the ONNX file holds it."""
    model = onnx.load(str(path))
    forms = {}
    for node in model.graph.node:
        layer, _, op = node.name.rpartition("/")
        if op in ("TernaryConv", "QTernaryConv"):
            forms[layer] = "ternary"
        elif op == "Conv" and layer.endswith(".path.3"):
            forms[layer] = "dense"
    return forms


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> Path:
    """The demo LBRN-S exported for this machine with --kernels auto (measured, 1 thread)."""
    from lbdeploy.exporters.export import export_model

    out = tmp_path_factory.mktemp("auto") / "out"
    export_model(DEMO, out, target="x86", kernels="auto", threads=1)
    return out


def test_auto_export_measures_and_records_every_layer(measured):
    _, manifest = open_artifact(measured)
    section = manifest["kernels"]
    assert section["mode"] == "auto" and section["method"] == "measured" and section["threads"] == 1
    assert section["precision"] == "fp32" and section["ops"] == "custom"
    assert set(section["whole_model_ms"]) >= {"ternary", "dense"} and section["kept"] in section["whole_model_ms"]
    rows = section["layers"]
    assert len(rows) == 17 and all(row["why"]["method"] == "measured" for row in rows)
    assert all(row["why"]["ternary_ms"] > 0 and row["why"]["dense_ms"] > 0 for row in rows)
    # the graph holds exactly the recorded choice
    assert _forms_in_graph(measured / "model.onnx") == {row["name"]: row["choice"] for row in rows}
    ours = sum(row["choice"] == "ternary" for row in rows)
    assert (manifest["ops"] == "custom") == (ours > 0)
    assert bool(manifest["custom_ops"]) == (ours > 0)
    # the kernel library travels even when no layer uses it, so `tune` can flip layers on the board
    assert manifest["kernel_library"]["path"] in manifest["files"]
    assert manifest["reference"]["gate"] == "parity"
    kept = {"reference/inputs.npy", "reference/reference.npy", "reference/float32_reference.npy"}
    assert kept <= set(manifest["files"])


def test_profile_shows_the_choice_per_layer(measured):
    result = CliRunner().invoke(main, ["profile", str(measured), "--runs", "1", "--warmup", "1", "--op-runs", "0"])
    assert result.exit_code == 0, result.output
    rows = layer_choices(open_artifact(measured).manifest)
    assert "kernels: auto (measured), fp32, threads 1" in result.output
    for row in rows:
        assert f"| {row['name']} | {row['density']} | {row['choice']} |" in result.output


def test_fp32_forms_convert_exactly_both_ways(measured):
    model = onnx.load(str(measured / "model.onnx"))
    names = [row["name"] for row in layer_choices(open_artifact(measured).manifest)]
    set_forms(model, dict.fromkeys(names, "ternary"), "fp32")
    ternary = {node.name: node for node in model.graph.node if node.op_type == "TernaryConv"}
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    packed = {name: weights[ternary[f"{name}/TernaryConv"].input[1]] for name in names}
    set_forms(model, dict.fromkeys(names, "dense"), "fp32")
    assert not any(node.domain == "ai.lbdeploy" for node in model.graph.node)
    assert all(op.domain != "ai.lbdeploy" for op in model.opset_import)
    set_forms(model, dict.fromkeys(names, "ternary"), "fp32")
    again = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    for name in names:
        node = next(n for n in model.graph.node if n.name == f"{name}/TernaryConv")
        np.testing.assert_array_equal(again[node.input[1]], packed[name])
    assert [layer.name for layer in list_layers(model)] == names


def test_tune_rewrites_the_choice_atomically_and_rechecks(measured, tmp_path):
    artifact = tmp_path / "art"
    shutil.copytree(measured, artifact)
    result = CliRunner().invoke(main, ["tune", str(artifact), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "| layer | density | choice |" in result.output and "machine:" in result.output
    root, manifest = open_artifact(artifact)  # every hash verifies
    section = manifest["kernels"]
    assert section["tuned"] and section["recheck"]["passed"] and section["method"] == "measured"
    assert _forms_in_graph(artifact / "model.onnx") == {row["name"]: row["choice"] for row in section["layers"]}
    assert manifest["files"]["model.onnx"] == file_sha256(artifact / "model.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no temporary folder left beside it


def test_tune_leaves_the_artifact_unchanged_when_the_recheck_fails(measured, tmp_path):
    from lbdeploy.exporters.tune import tune_artifact

    artifact = tmp_path / "art"
    shutil.copytree(measured, artifact)
    for name in ("reference", "float32_reference"):  # a reference this model cannot meet
        path = artifact / "reference" / f"{name}.npy"
        np.save(path, np.load(path) + 1.0)
    record_files(artifact, ["reference/reference.npy", "reference/float32_reference.npy"])
    before = {p.name: p.read_bytes() for p in (artifact / "model.onnx", artifact / "manifest.json")}
    with pytest.raises(ExportError, match="left unchanged"):
        tune_artifact(artifact, threads=1)
    assert {p.name: p.read_bytes() for p in (artifact / "model.onnx", artifact / "manifest.json")} == before


def test_tune_refuses_an_artifact_without_a_recorded_choice(measured, tmp_path):
    from lbdeploy.artifact import write_manifest
    from lbdeploy.exporters.tune import tune_artifact

    artifact = tmp_path / "old"
    shutil.copytree(measured, artifact)
    manifest = json.loads((artifact / "manifest.json").read_text())
    for key in ("kernels", "reference", "files", "format", "format_version"):
        manifest.pop(key)
    write_manifest(artifact, manifest)  # an artifact from before the choice existed still loads
    assert layer_choices(open_artifact(artifact).manifest) == []
    with pytest.raises(ConfigError, match="records no per-layer kernel choice"):
        tune_artifact(artifact)
    shown = CliRunner().invoke(main, ["profile", str(artifact), "--runs", "1", "--warmup", "1", "--op-runs", "0"])
    assert shown.exit_code == 0 and "kernel choice not recorded" in shown.output


def test_int8_ops_standard_uses_the_runtime_conv_and_cost_models_choose_per_target(tmp_path):
    result = CliRunner().invoke(main, ["export", str(DEMO), "--target", "x86", "--quantize", "int8", "--ops",
                                       "standard", "--calibration-images", "8", "--no-verify", "-o",
                                       str(tmp_path / "q")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    model = onnx.load(str(tmp_path / "q" / "model.onnx"))
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["QTernaryConv"] == 0 and manifest["ops"] == "standard" and manifest["custom_ops"] == []
    assert manifest["kernel_library"] is None and manifest["quantization"]["ternary_convs"] == 0
    rows = manifest["kernels"]["layers"]
    assert len(rows) == 17 and {row["choice"] for row in rows} == {"dense"}
    assert {row["why"]["reason"] for row in rows} == {"--ops standard"}
    # the same layers, chosen for boards by their cost models: no dot product -> our op; SDOT at d=0.5 -> dense
    names = [row["name"] for row in rows]
    for board, expected in (("rpi5", "dense"), ("rpi4", "ternary")):
        path = tmp_path / f"{board}.onnx"
        shutil.copy(tmp_path / "q" / "model.onnx", path)
        section = choose_forms(path, "int8", "auto", "custom", get_target(board), "ort", known=names)
        assert section["method"] == "model" and {row["choice"] for row in section["layers"]} == {expected}
        assert Counter(n.op_type for n in onnx.load(str(path)).graph.node)["QTernaryConv"] == (
            len(names) if expected == "ternary" else 0)
    import onnxruntime as ort

    from lbdeploy.kernels.build import build_ort_library

    options = ort.SessionOptions()
    options.register_custom_ops_library(str(build_ort_library()))
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
    ours = ort.InferenceSession(str(tmp_path / "rpi4.onnx"), options).run(None, {"image": x})[-1]
    dense = ort.InferenceSession(str(tmp_path / "q" / "model.onnx")).run(None, {"image": x})[-1]
    assert ours.shape == dense.shape and np.isfinite(ours).all()


@pytest.mark.parametrize("ops, kernels, capability, expected", [
    (None, "auto", "both", "custom"), (None, "dense", "both", "standard"), ("standard", "auto", "both", "standard"),
    (None, "auto", "standard", "standard"), ("custom", "dense", "both", "custom"),
    ("standard", "ternary", "both", "--kernels ternary runs our op"),
    ("custom", "auto", "standard", "runs standard ops only"),
    (None, "dense", "custom", "runs ternary layers as our op only"),
    (None, "fast", "both", "--kernels must be one of"),
])
def test_ops_and_kernels_combinations(ops, kernels, capability, expected):
    runs = {"both": (CUSTOM, STANDARD), "custom": (CUSTOM,), "standard": (STANDARD,)}[capability]
    spec = BackendSpec("toy", "a toy", "ort", object, object, ops=runs)
    if expected.startswith("-") or " " in expected:
        with pytest.raises(ConfigError, match=expected):
            resolve_ops(ops, kernels, spec)
    else:
        assert resolve_ops(ops, kernels, spec) == expected


def test_cli_refuses_a_combination_it_cannot_make_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["export", str(DEMO), "--ops", "standard", "--kernels", "ternary", "-o",
                                       str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "--ops standard" in result.output
    assert not (tmp_path / "out").exists()
    assert set(get_backend("ort").ops) == {CUSTOM, STANDARD}
