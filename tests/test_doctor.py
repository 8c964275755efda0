"""`lbdeploy doctor` on this machine: real packages, a real kernel library, a Jetson artifact."""

import shutil

from click.testing import CliRunner

from lbdeploy.cli import main
from lbdeploy.runtime.doctor import diagnose
from runtime_artifacts import pool_manifest, pool_model, write_artifact


def _doctor(*args):
    return CliRunner().invoke(main, ["doctor", *map(str, args)])


def _jetson_manifest() -> dict:
    plugin = {"name": "TernaryConv", "version": "1", "namespace": "", "library": "tensorrt/libternary_trt.so"}
    return {**pool_manifest(), "target": "jetson-orin", "backend": "tensorrt",
            "tensorrt": {"plugin": plugin, "engine": "tensorrt/model.engine", "onnx": "model.onnx"}}


def test_ort_backend_is_complete_here():
    result = _doctor("--backend", "ort")
    assert result.exit_code == 0, result.output
    assert "ok    python package onnxruntime" in result.output and "FAIL" not in result.output


def test_jetson_artifact_lists_what_this_machine_lacks(tmp_path):
    artifact = write_artifact(tmp_path / "jetson", pool_model(), _jetson_manifest())
    result = _doctor(artifact)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert "[tensorrt]" in lines and "[ort]" not in lines  # only what the artifact needs
    failed = [line for line in lines if line.startswith("FAIL")]
    assert any("TensorRT plugin library: tensorrt/libternary_trt.so not built" in line
               and "tensorrt/build.sh" in line for line in failed), result.output
    assert any(line.startswith("FAIL  TensorRT engine") and "lbdeploy build-engine" in line for line in failed)
    assert all("fix: " in line for line in failed)


def test_artifact_kernel_library_is_loaded(tmp_path, library):
    manifest = {**pool_manifest(), "kernel_library": {"path": "kernels/libternary_ort.so", "arch": "x86_64"}}
    with open(library, "rb") as handle:
        artifact = write_artifact(tmp_path / "ort", pool_model(), manifest,
                                  {"kernels/libternary_ort.so": handle.read()})
    report = diagnose(artifact)
    assert report.ok, report.lines()
    assert any("kernels/libternary_ort.so loads" in line for line in report.lines())
    # a library that is not a shared object for this machine is a failed check, not a crash
    broken = tmp_path / "broken"
    shutil.copytree(artifact, broken)
    write_artifact(broken, pool_model(), manifest, {"kernels/libternary_ort.so": b"\x7fELF not really"})
    report = diagnose(broken)
    assert not report.ok and any(line.startswith("FAIL  ORT kernel library") for line in report.lines())


def test_a_modified_artifact_is_a_one_line_error(tmp_path):
    artifact = write_artifact(tmp_path / "a", pool_model(), pool_manifest())
    (artifact / "model.onnx").write_bytes(b"tampered")
    result = _doctor(artifact)
    assert result.exit_code == 2 and result.output.startswith("Error:") and len(result.output.splitlines()) == 1
