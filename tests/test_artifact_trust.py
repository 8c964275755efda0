"""The artifact trust boundary (lbdeploy/artifact.py, docs/artifact.md), tried as an attacker would.

A shared library whose constructor writes a marker file stands in for hostile code: each tampered
manifest must be refused by `lbdeploy infer` with a one-line error (exit 2) before anything is
loaded, so the marker never appears. A swapped model with `files: {}` and manifests of the wrong
shape are refused the same way.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from lbdeploy.cli import main
from lbdeploy.artifact import file_sha256
from runtime_artifacts import dot_image, pool_manifest, pool_model, write_artifact

CUSTOM = [{"domain": "ai.lbdeploy", "op_type": "TernaryConv", "version": 1}]


@pytest.fixture(scope="module")
def evil_library(tmp_path_factory) -> Path:
    """A shared library whose constructor creates $LBDEPLOY_TEST_MARKER."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    folder = tmp_path_factory.mktemp("evil")
    (folder / "evil.c").write_text(
        '#include <stdio.h>\n#include <stdlib.h>\n'
        '__attribute__((constructor)) static void run(void) {\n'
        '  const char* p = getenv("LBDEPLOY_TEST_MARKER"); if (p) { FILE* f = fopen(p, "w"); if (f) fclose(f); }\n}\n')
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(folder / "evil.so"), str(folder / "evil.c")], check=True)
    return folder / "evil.so"


@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "constructor-ran"
    monkeypatch.setenv("LBDEPLOY_TEST_MARKER", str(path))
    return path


def _infer(artifact: Path, tmp_path: Path):
    image = tmp_path / "img.png"
    Image.fromarray(dot_image(64, 64, {})).save(image)
    return CliRunner().invoke(main, ["infer", str(artifact), str(image)])


def _assert_refused(result, *words):
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1 and all(w in error[0] for w in words), result.output


def _custom_artifact(folder: Path, library_path: str, extra_files=None, listed=True) -> Path:
    manifest = {**pool_manifest(), "ops": "custom", "custom_ops": CUSTOM,
                "kernel_library": {"path": library_path, "arch": "x86_64"}}
    folder = write_artifact(folder, pool_model(), manifest, extra_files)
    if not listed:
        saved = json.loads((folder / "manifest.json").read_text())
        saved["files"].pop(library_path)
        (folder / "manifest.json").write_text(json.dumps(saved))
    return folder


def test_absolute_kernel_library_is_refused(tmp_path, evil_library, marker):
    artifact = _custom_artifact(tmp_path / "a", str(evil_library))
    _assert_refused(_infer(artifact, tmp_path), "kernel")
    assert not marker.exists()


def test_parent_relative_kernel_library_is_refused(tmp_path, evil_library, marker):
    shutil.copy(evil_library, tmp_path / "evil.so")
    artifact = _custom_artifact(tmp_path / "a", "../evil.so")
    _assert_refused(_infer(artifact, tmp_path))
    assert not marker.exists()


def test_kernel_library_not_in_files_is_refused(tmp_path, evil_library, marker):
    artifact = _custom_artifact(tmp_path / "a", "kernels/lib.so", {"kernels/lib.so": evil_library.read_bytes()},
                                listed=False)
    _assert_refused(_infer(artifact, tmp_path), "files")
    assert not marker.exists()


def test_symlink_out_of_the_folder_is_refused(tmp_path, evil_library, marker):
    artifact = _custom_artifact(tmp_path / "a", "kernels/lib.so", {"kernels/lib.so": evil_library.read_bytes()})
    (artifact / "kernels" / "lib.so").unlink()
    os.symlink(evil_library, artifact / "kernels" / "lib.so")  # same bytes, same sha256, outside the folder
    _assert_refused(_infer(artifact, tmp_path), "outside")
    assert not marker.exists()


def test_swapped_model_with_empty_files_is_refused(tmp_path):
    artifact = write_artifact(tmp_path / "a", pool_model(), pool_manifest())
    (artifact / "model.onnx").write_bytes(pool_model(size=(32, 32)).SerializeToString())
    saved = json.loads((artifact / "manifest.json").read_text())
    saved["files"] = {}
    (artifact / "manifest.json").write_text(json.dumps(saved))
    _assert_refused(_infer(artifact, tmp_path), "model.onnx")


def test_swapped_model_with_its_own_hash_removed_is_refused(tmp_path):
    artifact = write_artifact(tmp_path / "a", pool_model(), pool_manifest(), {"notes.txt": b"x"})
    (artifact / "model.onnx").write_bytes(pool_model(size=(32, 32)).SerializeToString())
    saved = json.loads((artifact / "manifest.json").read_text())
    del saved["files"]["model.onnx"]
    (artifact / "manifest.json").write_text(json.dumps(saved))
    _assert_refused(_infer(artifact, tmp_path), "model.onnx")


@pytest.mark.parametrize("field, value, named", [
    ("files", ["model.onnx"], "'files'"),
    ("outputs", [1], "outputs[0]"),
    ("kernel_library", "kernels/lib.so", "'kernel_library'"),
    ("input", {"name": 3, "shape": [1, 3, 64, 64]}, "input.name"),
    ("format_version", "1", "format_version"),
])
def test_wrong_typed_manifest_fields_name_the_field(tmp_path, field, value, named):
    artifact = write_artifact(tmp_path / "a", pool_model(), pool_manifest())
    saved = json.loads((artifact / "manifest.json").read_text())
    saved[field] = value
    (artifact / "manifest.json").write_text(json.dumps(saved))
    _assert_refused(_infer(artifact, tmp_path), named)


def test_untampered_artifact_runs(tmp_path):
    artifact = write_artifact(tmp_path / "a", pool_model(), pool_manifest())
    assert file_sha256(artifact / "model.onnx") == json.loads((artifact / "manifest.json").read_text())["files"]["model.onnx"]
    assert _infer(artifact, tmp_path).exit_code == 0
