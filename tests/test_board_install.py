"""The torch-free board install: commands that need torch say which extra to install (exit 2).

A real venv (not --system-site-packages, which would see the dev venv's torch) gets what
`lbdeploy[runtime]` brings minus the server (numpy, click, pillow, tqdm, onnxruntime) from PyPI or
pip's cache, and the package itself with --no-deps from this checkout, not editable. Then the
`lbdeploy` entry point runs each command.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "lbdeploy" / "data" / "demo.pt"
BOARD_DEPS = ["numpy", "click", "pillow", "tqdm", "onnxruntime"]


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
                   check=True, cwd=REPO, timeout=900)


@pytest.fixture(scope="session")
def board_venv(tmp_path_factory, package_source) -> Path:
    """bin/ of a venv with the runtime's core dependencies and lbdeploy, without torch."""
    venv = tmp_path_factory.mktemp("board") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    try:
        _pip(python, "-c", "constraints.txt", *BOARD_DEPS)
    except subprocess.CalledProcessError as err:
        pytest.skip(f"cannot install {BOARD_DEPS} from PyPI or pip's cache here: {err}")
    _pip(python, "--no-deps", str(package_source))
    probe = subprocess.run([str(python), "-c", "import torch"], capture_output=True, cwd="/")
    assert probe.returncode != 0, "the board venv must not see torch"
    return venv / "bin"


def _lbdeploy(bin_dir: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(bin_dir / "lbdeploy"), *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["create", "lbrn-s", "-o", "m.pt"],
    ["inspect", str(DEMO)],
    ["export", str(DEMO), "-o", "out"],
    ["models"],
    ["train", "--data", "synthetic:8,4", "-o", "run", "--epochs", "1"],
], ids=lambda args: args[0])
def test_torch_commands_name_the_extra(board_venv, tmp_path, args):
    result = _lbdeploy(board_venv, tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "pip install 'lbdeploy[torch]'" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.pt").exists()


@pytest.mark.slow
def test_runtime_commands_work_without_torch(board_venv, tmp_path):
    assert _lbdeploy(board_venv, tmp_path, "--help").returncode == 0
    targets = _lbdeploy(board_venv, tmp_path, "targets")
    assert targets.returncode == 0 and "x86" in targets.stdout
