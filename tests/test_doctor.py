"""`lbdeploy doctor` on this machine: real packages, a real kernel library, a Jetson artifact."""

import shutil
import subprocess
import sys
from pathlib import Path

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


def _doctor_without(modules, *args):
    """`lbdeploy doctor ARGS` in a fresh interpreter where `modules` cannot be imported (as on a board
    without them; sys.modules[name] = None makes `import name` raise ImportError)."""
    import subprocess
    import sys

    code = (f"import sys\nfor name in {list(modules)!r}: sys.modules[name] = None\n"
            f"from lbdeploy.cli import main\nmain({['doctor', *map(str, args)]!r})")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


def test_no_arguments_judges_this_machines_target_only():
    result = _doctor()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "[ort]" in lines and "[tensorrt]" not in result.output and "CUDA" not in result.output


def test_a_runtime_only_board_passes_without_torch_and_tvm():
    done = _doctor_without(["torch", "tvm"])
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "[tvm] (optional)" in lines and "[torch] (optional)" in lines
    assert any(line.startswith("--    python package tvm") and "optional; to use it: pip install" in line for line in lines)
    assert any(line.startswith("--    python package torch") for line in lines)
    assert not any(line.startswith("FAIL") for line in lines), done.stdout


def _tvm_artifact(tmp_path, device: str, machine: int) -> Path:
    """A TVM artifact whose module is an ELF header for `machine` (183 aarch64, 62 x86-64): doctor reads no more."""
    elf = b"\x7fELF\x02\x01\x01" + bytes(9) + (3).to_bytes(2, "little") + machine.to_bytes(2, "little") + bytes(44)
    manifest = {**pool_manifest(), "target": "jetson-orin", "backend": "tvm",
                "tvm": {"module": "tvm/model.so", "device": device, "batch": 1}}
    return write_artifact(tmp_path / f"tvm-{device}", pool_model(), manifest, {"tvm/model.so": elf})


def test_tvm_module_of_another_cpu_and_a_tvm_without_cuda(tmp_path):
    report = diagnose(_tvm_artifact(tmp_path, "cuda", 183))
    lines = report.lines()
    assert not report.ok
    assert any(line.startswith("FAIL  TVM module: tvm/model.so is aarch64 code (for jetson-orin), this machine is")
               and "lbdeploy bundle" in line for line in lines), lines
    # the CPU wheel here has no CUDA runtime: say that, not "no CUDA device visible"
    assert any(line.startswith("FAIL  TVM CUDA runtime") and "libtvm_runtime_cuda.so" in line for line in lines), lines
    assert not any("no CUDA device visible" in line for line in lines)


def test_no_tvm_device_line_without_tvm(tmp_path):
    artifact = _tvm_artifact(tmp_path, "cpu", 62)
    done = _doctor_without(["tvm"], artifact)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  python package tvm: not importable" in done.stdout
    assert "TVM device" not in done.stdout and "ok    TVM" not in done.stdout.replace("ok    TVM module", "")


def test_jetpack5_is_named_unsupported(tmp_path, monkeypatch):
    import lbdeploy.runtime.doctor as doctor

    release = tmp_path / "nv_tegra_release"
    release.write_text("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n")
    monkeypatch.setattr(doctor, "NV_TEGRA_RELEASE", str(release))
    artifact = write_artifact(tmp_path / "jetson", pool_model(), _jetson_manifest())
    lines = diagnose(artifact).lines()
    jetpack = next(line for line in lines if line.startswith("FAIL  JetPack"))
    assert "JetPack 5 is not supported" in jetpack and "Python 3.8" in jetpack and "JetPack 6.1" in jetpack
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    assert "ok    JetPack: NVIDIA JetPack 6.1 / 6.2" in "\n".join(diagnose(artifact).lines())


def test_build_engine_needs_onnx_and_doctor_checks_it(tmp_path):
    artifact = write_artifact(tmp_path / "jetson", pool_model(), _jetson_manifest())
    done = _doctor_without(["onnx"], artifact)
    assert "FAIL  python package onnx (build-engine): not importable" in done.stdout
    assert "pip install 'lbdeploy[tensorrt]'" in done.stdout


def test_a_stated_target_is_judged_by_its_default_backend():
    result = _doctor("--target", "jetson-orin")
    assert result.exit_code == 1, result.output  # no TensorRT, no CUDA driver here
    lines = result.output.splitlines()
    assert "[tensorrt]" in lines and "[tvm] (optional)" in lines and "[ort]" not in lines
    assert any(line.startswith("FAIL  TensorRT") for line in lines)
    assert _doctor("--target", "rpi5").exit_code == 0  # ort here; tvm optional
    assert _doctor("--target", "rpi5", "--backend", "ort").exit_code == 2  # one or the other
