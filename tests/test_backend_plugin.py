"""A backend from another package: docs/architecture.md's "Adding a backend", followed to the letter.

A toy package (`lbdeploy_toy`, one module and a pyproject.toml with one `lbdeploy.backends` entry
point) is written to a temporary folder and installed there with pip (`--target`, no
dependencies: it needs only lbdeploy, from this checkout). A fresh interpreter with that folder
on its path then finds the backend without any edit to lbdeploy: `--backend toy` is a choice, the
export writes the toy's file and manifest section, the artifact validates against the section
schema of the toy's record and runs through the toy's runtime class, and `lbdeploy doctor` runs
the record's check.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="exporting needs torch (pip install lbdeploy[torch])")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

REPO = Path(__file__).resolve().parent.parent

TOY_MODULE = '''
"""A toy backend: ONNX Runtime on standard ops, with a file and a manifest section of its own."""

from lbdeploy.artifact import contained_path
from lbdeploy.backends import STANDARD, BackendSpec
from lbdeploy.exporters.backends import ExportStep
from lbdeploy.runtime.backends.ort import OrtBackend
from lbdeploy.runtime.doctor import Check

MODULE = "toy/model.toy"


class ToyBackend(OrtBackend):
    """Reads its own file (resolved inside the artifact), then runs model.onnx."""

    def __init__(self, artifact_dir, manifest, **opts):
        self.marker = contained_path(artifact_dir, manifest["toy"]["module"], "toy module").read_text()
        super().__init__(artifact_dir, manifest, **opts)


class ToyExport(ExportStep):
    """Writes toy/model.toy beside model.onnx."""

    def add_files(self, work, progress):
        progress("writing the toy module")
        (work / "toy").mkdir()
        (work / MODULE).write_text(f"toy module for {self.target.name}")
        return {"toy": {"module": MODULE, "target": self.target.name}}


def engine_check(context):
    return Check("toy engine", True, "ready")


BACKEND = BackendSpec("toy", "a toy engine from another package", "toy", ToyBackend, ToyExport, ops=(STANDARD,),
                      section="toy", section_schema={"module": (str,)}, loadable=("module",),
                      doctor_checks=(engine_check,), serves={"x86": None})
'''

TOY_PYPROJECT = '''
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "lbdeploy-toy"
version = "0.1.0"

[project.entry-points."lbdeploy.backends"]
toy = "lbdeploy_toy:BACKEND"

[tool.setuptools]
py-modules = ["lbdeploy_toy"]
'''

SCENARIO = '''
import json, shutil, sys
from pathlib import Path
from click.testing import CliRunner
from lbdeploy.artifact import open_artifact, write_manifest
from lbdeploy.cli import main
from lbdeploy.errors import ArtifactError
from lbdeploy.runtime.predictor import Predictor

work, sample = Path(sys.argv[1]), sys.argv[2]
runner = CliRunner()
choices = [p for p in main.commands["export"].params if p.name == "backend"][0].type.choices
assert "toy" in choices, choices
result = runner.invoke(main, ["create", "lbrn-s", "--stacks", "1", "--feats", "16", "--modules", "1",
                              "--input-size", "64x64", "-o", str(work / "m.pt")])
assert result.exit_code == 0, result.output
result = runner.invoke(main, ["export", str(work / "m.pt"), "--target", "x86", "--backend", "toy", "--ops", "standard",
                              "-o", str(work / "art")])
assert result.exit_code == 0, result.output
assert "writing the toy module" in result.output and "parity passed" in result.output, result.output
root, manifest = open_artifact(work / "art")
assert manifest["backend"] == "toy" and manifest["toy"] == {"module": "toy/model.toy", "target": "x86"}
assert "toy/model.toy" in manifest["files"]
predictor = Predictor(work / "art", detector="none")
assert type(predictor.backend).__name__ == "ToyBackend" and predictor.backend.marker == "toy module for x86"
result = runner.invoke(main, ["infer", str(work / "art"), sample, "--detector", "none"])
assert result.exit_code == 0 and len(json.loads(result.stdout)["images"][0]["people"]) == 1, result.output
result = runner.invoke(main, ["doctor", str(work / "art")])
assert "toy engine: ready" in result.output, result.output
bad = json.loads((work / "art" / "manifest.json").read_text())
bad["toy"]["module"] = 5
(work / "art" / "manifest.json").write_text(json.dumps(bad))
try:
    open_artifact(work / "art")
    raise SystemExit("a toy section of the wrong type was accepted")
except ArtifactError as err:
    assert "'toy.module'" in str(err), err
unlisted = dict(manifest)
del unlisted["files"]["toy/model.toy"]
(work / "art" / "manifest.json").write_text(json.dumps(unlisted))
try:
    open_artifact(work / "art")
    raise SystemExit("a toy module missing from files was accepted")
except ArtifactError as err:
    assert "toy/model.toy" in str(err), err
print("TOY BACKEND OK")
'''


def test_a_backend_from_another_package_registers_through_its_entry_point(tmp_path):
    source = tmp_path / "lbdeploy-toy"
    source.mkdir()
    (source / "lbdeploy_toy.py").write_text(textwrap.dedent(TOY_MODULE))
    (source / "pyproject.toml").write_text(TOY_PYPROJECT)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(source)], check=True, timeout=600, cwd=tmp_path)
    assert (next(site.glob("lbdeploy_toy-*.dist-info")) / "entry_points.txt").read_text().count("lbdeploy.backends") == 1
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    result = subprocess.run([sys.executable, "-c", SCENARIO, str(tmp_path), str(REPO / "lbdeploy" / "data" / "sample.jpg")],
                            env=env, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert result.returncode == 0 and "TOY BACKEND OK" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]


def test_an_entry_point_that_is_not_a_record_is_left_out(tmp_path):
    """A broken registration is left out with a warning naming it; the other backends still work."""
    (tmp_path / "bad_backend.py").write_text("BACKEND = object()\n")
    dist = tmp_path / "bad_backend-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lbdeploy.backends]\nbad = bad_backend:BACKEND\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    result = subprocess.run([sys.executable, "-m", "lbdeploy.cli", "export", "--help"], env=env, capture_output=True,
                            text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bad = bad_backend:BACKEND" in result.stderr and "BackendSpec" in result.stderr
    assert "[ort|tvm|tensorrt]" in result.stdout
