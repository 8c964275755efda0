"""`lbdeploy bundle`: one archive from this machine to a board, installed offline in the emulated ARM lane.

The refusals run anywhere. Resolving and downloading need PyPI (pip, as a user's machine would);
they skip with the reason when it cannot be reached. The ARM test unpacks an arm64 bundle, runs
its install.sh with the lane's bare aarch64 python in a network namespace without network (or
with every proxy pointing at a closed port where namespaces are not allowed), then checks the
first inference against the same model on x86.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lbdeploy.board_os import BOARD_OSES, MIN_PYTHON, get_board_os, jetpack_of_l4t, parse_nv_tegra_release
from lbdeploy.cli import main
from lbdeploy.errors import ConfigError, ExportError
from lbdeploy.workflows.bundle import build_lbdeploy_wheel, make_bundle, resolve_requirements
from runtime_artifacts import pool_manifest, pool_model, write_artifact

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "lbdeploy" / "data" / "demo.pt"


def _artifact(tmp_path, **fields) -> Path:
    return write_artifact(tmp_path / "artifact", pool_model(), {**pool_manifest(), **fields})


def _jetson_fields(target: str, plugin: bool = True) -> dict:
    section = {"engine": "tensorrt/model.engine", "onnx": "model.onnx"}
    if plugin:
        section["plugin"] = {"name": "TernaryConv", "version": "1", "namespace": "", "library": "tensorrt/libternary_trt.so"}
    return {"target": target, "backend": "tensorrt", "tensorrt": section}


@pytest.mark.parametrize("fields, args, message", [
    (_jetson_fields("jetson-xavier", plugin=False), [], "JetPack 5 is not supported"),
    (_jetson_fields("jetson-orin"), ["--os", "jetpack6.0"], "needs TensorRT >= 10.3"),
    (_jetson_fields("jetson-orin"), ["--os", "debian12"], "runs on a Jetson"),
    ({"target": "x86", "backend": "ort"}, ["--target", "rpi4"], "re-export it: lbdeploy export MODEL --target rpi4"),
], ids=["jetpack5", "plugin-on-jetpack6.0", "tensorrt-off-jetson", "other-cpu"])
def test_what_cannot_run_on_the_board_is_one_line_and_writes_nothing(tmp_path, fields, args, message):
    artifact = _artifact(tmp_path, **fields)
    out = tmp_path / "board.tar.gz"
    result = CliRunner().invoke(main, ["bundle", str(artifact), "-o", str(out), *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert message in result.output
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_output_name_and_existing_file(tmp_path):
    artifact = _artifact(tmp_path, target="arm64", backend="ort")
    with pytest.raises(ConfigError, match="NAME.tar.gz"):
        make_bundle(artifact, tmp_path / "board.zip")
    (tmp_path / "board.tar.gz").write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="--force"):
        make_bundle(artifact, tmp_path / "board.tar.gz")
    assert (tmp_path / "board.tar.gz").read_bytes() == b"keep me"


def test_jetpack_records_follow_nvidia_tables():
    """The versions that pins and doctor rely on, as NVIDIA's JetPack release notes give them."""
    assert (get_board_os("jetpack6.1").cuda, get_board_os("jetpack6.1").tensorrt) == ("12.6", "10.3")
    assert (get_board_os("jetpack6.0").cuda, get_board_os("jetpack6.0").tensorrt) == ("12.2", "8.6")
    assert "cuda-python==12.6.*" in get_board_os("jetpack6.1").pins and "numpy<2" in get_board_os("jetpack6.1").pins
    import tomllib

    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == f">={MIN_PYTHON[0]}.{MIN_PYTHON[1]}"
    for record in BOARD_OSES.values():  # a system whose Python lbdeploy cannot run on says so, and what instead
        too_old = tuple(map(int, record.python.split("."))) < MIN_PYTHON
        assert bool(record.unsupported) == too_old and (not too_old or "--backend ort" in record.unsupported)
    assert parse_nv_tegra_release("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64") == "36.4.0"
    assert jetpack_of_l4t("36.4.0").name == "jetpack6.1" and jetpack_of_l4t("36.3.0").name == "jetpack6.0"
    assert jetpack_of_l4t("35.3.1").name == "jetpack5.1" and jetpack_of_l4t("38.2.0") is None


@pytest.fixture(scope="module")
def lbdeploy_wheel(tmp_path_factory) -> Path:
    """lbdeploy's wheel as the bundle builds it (the checkout stays clean)."""
    before = sorted(p.name for p in REPO.iterdir())
    wheel = build_lbdeploy_wheel(tmp_path_factory.mktemp("wheel"))
    assert sorted(p.name for p in REPO.iterdir()) == before, "building the wheel must leave the checkout as it was"
    return wheel


def _resolved(wheel, extras, os_name, arch, tmp_path) -> list[str]:
    try:
        return resolve_requirements(wheel, extras, get_board_os(os_name), arch, tmp_path)
    except ExportError as err:
        pytest.skip(f"PyPI cannot be reached from here: {err}")


@pytest.mark.slow
def test_jetson_requirements_are_pinned_for_jetpack(lbdeploy_wheel, tmp_path):
    pins = dict(line.split("==") for line in _resolved(lbdeploy_wheel, ["runtime", "tensorrt"], "jetpack6.1",
                                                      "aarch64", tmp_path))
    assert pins["cuda-python"].startswith("12.6.")  # JetPack 6.1's CUDA, not the newest 12.x
    assert int(pins["numpy"].split(".")[0]) == 1  # JetPack's system modules are built for numpy 1
    assert {"onnx", "onnxruntime"} <= set(pins)  # build-engine reads model.onnx; the fp16 gate runs ORT
    assert "torch" not in pins and "lbdeploy" not in pins


@pytest.fixture(scope="module")
def arm64_demo(tmp_path_factory, arm_python) -> Path:
    """The demo model exported for arm64: our aarch64 kernel library, the board's default backend."""
    pytest.importorskip("torch", reason="exporting needs torch")
    from lbdeploy.exporters.export import export_model

    folder = tmp_path_factory.mktemp("arm64") / "artifact"
    export_model(DEMO, folder, target="arm64")
    return folder


def _offline(command: list[str]) -> list[str]:
    """`command` in a network namespace of its own (no network at all) when this host allows one."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n", *command]
    return command


@pytest.mark.arm
@pytest.mark.slow
def test_arm64_bundle_installs_offline_and_infers(arm64_demo, demo_artifact, tmp_path):
    from lbdeploy.runtime.predictor import Predictor
    from lbdeploy.runtime.testing.arm_lane import write_bare_python

    try:
        made = make_bundle(arm64_demo, tmp_path / "board.tar.gz")
    except ExportError as err:
        pytest.skip(f"PyPI cannot be reached from here: {err}")
    assert (made.target, made.board_os, made.python, made.offline) == ("arm64", "debian12", "3.11", True)
    board = tmp_path / "on-the-board"
    with tarfile.open(made.path) as archive:
        archive.extractall(board, filter="data")
    root = board / "board"
    names = {p.name for p in root.iterdir()}
    assert {"artifact", "install.sh", "README.md", "requirements.txt", "wheels", "sample.jpg", "bundle.json"} <= names
    wheels = {p.name for p in (root / "wheels").iterdir()}
    assert all("aarch64" in name or name.endswith("-none-any.whl") for name in wheels), wheels
    assert any(name.startswith("onnxruntime-") for name in wheels) and not any("torch" in name for name in wheels)

    tools = write_bare_python(tmp_path / "tools")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_"))}
    env.update(PATH=f"{tools.parent}{os.pathsep}{env['PATH']}", LBDEPLOY_CACHE=str(tmp_path / "cache"),
               PIP_CONFIG_FILE=os.devnull, PIP_NO_CACHE_DIR="1",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", HOME=str(tmp_path / "home"))
    done = subprocess.run(_offline(["sh", str(root / "install.sh")]), env=env, capture_output=True, text=True,
                          cwd=board, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "installing from" in done.stderr and "ok    ORT kernel library" in done.stdout

    # lbdeploy and numpy come from the venv (the wheels), on aarch64
    probe = subprocess.run([str(root / "venv" / "bin" / "python"), "-c",
                            "import json, platform, lbdeploy, numpy; print(json.dumps([platform.machine(), "
                            "lbdeploy.__file__, numpy.__version__]))"], env=env, capture_output=True, text=True,
                           timeout=600, cwd=tmp_path)
    machine, module, numpy_version = json.loads(probe.stdout.strip().splitlines()[-1])
    assert machine == "aarch64" and module.startswith(str(root / "venv"))
    assert f"numpy=={numpy_version}" in (root / "requirements.txt").read_text().splitlines()

    # the first inference matches the same model on x86 (exported with plain Conv, run by the Predictor)
    arm = json.loads((root / "first-inference.json").read_text())
    x86 = Predictor(demo_artifact).predict(root / "sample.jpg")
    people = arm["images"][0]["people"]
    keypoints = np.array([person["keypoints"] for person in people], dtype=np.float64).reshape(len(people), -1, 3)[..., :2]
    assert keypoints.shape == x86.keypoints.shape
    assert np.abs(keypoints - x86.keypoints).max() <= 1.0  # pixels; the same network with our aarch64 kernels


def test_docs_carry_the_board_os_table():
    from lbdeploy.board_os import board_os_table_markdown

    assert board_os_table_markdown() in (REPO / "docs" / "tensorrt.md").read_text(), (
        "docs/tensorrt.md is out of date: paste `python -c \"from lbdeploy.board_os import board_os_table_markdown as t; "
        "print(t())\"` under 'Which JetPack'")


def test_install_script_refuses_another_python_before_touching_anything(tmp_path):
    import sys

    from lbdeploy.workflows.bundle_install import BundleSettings, install_script

    settings = BundleSettings("board", "jetson-orin", "jetpack6.1", "JetPack 6.1", "3.10", "aarch64", "tensorrt", "pose",
                              True, True, True, True, "lbdeploy-0.1.0-py3-none-any.whl", "pip-0-py3-none-any.whl")
    script = tmp_path / "board" / "install.sh"
    script.parent.mkdir()
    script.write_text(install_script(settings))
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "wheels for Python 3.10 (jetpack6.1)" in done.stderr, done.stderr
    assert "PYTHON=python3.10" in done.stderr
    assert [p.name for p in script.parent.iterdir()] == ["install.sh"]  # no venv made


def test_the_tensorrt_extra_can_build_an_engine():
    """A board install of lbdeploy[runtime,tensorrt] has onnx (build-engine reads model.onnx) and a
    cuda-python no newer than JetPack 6.1's CUDA 12.6."""
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("onnx>=") for req in extras["tensorrt"])
    cuda = next(req for req in extras["tensorrt"] if req.startswith("cuda-python"))
    assert "<12.7" in cuda
