"""`lbdeploy verify` (exporters/verify.py): hashes, containment, signature and the stored reference
outputs of a real export, re-checked without PyTorch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lbdeploy.artifact import file_sha256
from lbdeploy.checkpoint import save_checkpoint
from lbdeploy.cli import main
from lbdeploy.exporters.export import export_model
from lbdeploy.models import build_model
from lbdeploy.exporters.verify import verify_artifact

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("verify")
    model_pt = save_checkpoint(folder / "m.pt", build_model("lbrn-s", stacks=1, depth=2, input_size=(64, 64)))
    export_model(model_pt, folder / "out", target="x86")
    return folder / "out"


def test_an_export_stores_its_reference_and_verifies(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    assert {"reference/inputs.npy", "reference/reference.npy", "reference/float32_reference.npy"} <= set(manifest["files"])
    assert manifest["reference"]["inputs"] == "reference/inputs.npy" and manifest["reference"]["gate"] == "parity"
    report = verify_artifact(exported)
    assert report.ok, report.lines()
    assert any(line.startswith("ok    reference outputs: parity rule") for line in report.lines())


def test_verify_runs_without_torch(exported):
    """torch made unimportable: the command still checks everything, the reference run included."""
    code = "import sys; sys.modules['torch'] = None; sys.argv[0] = 'lbdeploy'; from lbdeploy.cli import main; main()"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code, "verify", str(exported)], env=env, text=True,
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok    reference outputs" in done.stdout


def test_a_consistently_rehashed_wrong_reference_fails_the_check(exported, tmp_path):
    """Outputs that no longer match the reference (here: the references moved by a tenth of their
    spread, both precisions alike, so the noise floor stays) exit 1."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for name in ("reference", "float32_reference"):
        path = copy / "reference" / f"{name}.npy"
        array = np.load(path)
        np.save(path, array + 0.1 * (array.max() - array.min()), allow_pickle=False)
        manifest["files"][f"reference/{name}.npy"] = file_sha256(path)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(main, ["verify", str(copy)])
    assert result.exit_code == 1 and "FAIL  reference outputs" in result.output, result.output


def test_a_modified_file_is_refused_in_one_line(exported, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    (copy / "reference" / "inputs.npy").write_bytes(b"changed")
    result = CliRunner().invoke(main, ["verify", str(copy)])
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert result.exit_code == 2 and len(errors) == 1 and "was modified" in errors[0], result.output


def test_model_onnx_names_no_path_of_the_build_host(exported):
    """Issue 24, 14: the dynamo exporter's stack traces named the checkout and the venv."""
    raw = (exported / "model.onnx").read_bytes()
    for path in {str(REPO), sys.prefix, sys.base_prefix, str(Path.home())}:
        assert os.fsencode(path) not in raw, path


def test_export_sign_key_signs_the_artifact_before_it_takes_its_place(exported, tmp_path):
    """`export --sign-key`: the folder is signed while still temporary (its marker file is not covered)."""
    pytest.importorskip("model_signing")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "key.pem").write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "pub.pem").write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    model_pt = exported.parent / "m.pt"
    export_model(model_pt, tmp_path / "signed", target="onnx", ops="standard", sign_key=tmp_path / "key.pem")
    assert (tmp_path / "signed" / "signature.sig").is_file()
    report = verify_artifact(tmp_path / "signed", trusted_key=tmp_path / "pub.pem")
    assert report.ok and report.lines()[0].startswith("ok    signature: matches"), report.lines()
