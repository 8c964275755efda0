"""Signed artifacts (lbdeploy/signing.py, docs/signing.md) with real elliptic-curve keys.

With a trusted public key configured (option or environment), every command that opens an
artifact refuses it in one line unless its signature.sig was made by the paired private key over
exactly the folder's files; without one, signatures are not required.
"""

import json

import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("model_signing")
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from lbdeploy.artifact import open_artifact  # noqa: E402
from lbdeploy.cli import main  # noqa: E402
from lbdeploy.errors import ArtifactError  # noqa: E402
from lbdeploy.signing import TRUSTED_KEY_ENV, sign_artifact  # noqa: E402
from runtime_artifacts import dot_image, pool_manifest, pool_model, write_artifact  # noqa: E402


def _key_pair(folder, name, curve=ec.SECP256R1()):
    private = ec.generate_private_key(curve)
    private_path, public_path = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private_path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    public_path.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


@pytest.fixture(autouse=True)
def no_key_configured(monkeypatch):
    """`--trusted-key` sets the variable for the process (so workers inherit it); restore it after each test."""
    monkeypatch.setenv(TRUSTED_KEY_ENV, "")


@pytest.fixture
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return {"builder": _key_pair(folder, "builder"), "other": _key_pair(folder, "other", ec.SECP384R1())}


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(dot_image(64, 64, {})).save(path)
    return path


def _artifact(tmp_path):
    return write_artifact(tmp_path / "a", pool_model(), pool_manifest())


def _infer(*args, env=None):
    return CliRunner().invoke(main, [*map(str, args)], env=env or {})


def _refused(result, *words):
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert result.exit_code == 2 and len(errors) == 1 and all(w in errors[0] for w in words), result.output


def test_signed_artifact_runs_with_the_trusted_key(tmp_path, keys, image):
    artifact = _artifact(tmp_path)
    result = CliRunner().invoke(main, ["sign", str(artifact), "--key", str(keys["builder"][0])])
    assert result.exit_code == 0 and (artifact / "signature.sig").is_file(), result.output
    ok = _infer("--trusted-key", keys["builder"][1], "infer", artifact, image)
    assert ok.exit_code == 0, ok.output
    ok = _infer("infer", artifact, image, env={TRUSTED_KEY_ENV: str(keys["builder"][1])})
    assert ok.exit_code == 0, ok.output
    # the signature does not break the manifest's own hash list
    assert "signature.sig" not in json.loads((artifact / "manifest.json").read_text())["files"]
    assert open_artifact(artifact, trusted_key="").manifest["files"]


def test_unsigned_artifact_is_refused_when_a_key_is_configured(tmp_path, keys, image):
    artifact = _artifact(tmp_path)
    _refused(_infer("infer", artifact, image, env={TRUSTED_KEY_ENV: str(keys["builder"][1])}), "not signed")
    assert _infer("infer", artifact, image).exit_code == 0  # no key configured: hashes only


def test_signature_by_another_key_is_refused(tmp_path, keys, image):
    artifact = _artifact(tmp_path)
    sign_artifact(artifact, keys["other"][0])
    _refused(_infer("--trusted-key", keys["builder"][1], "infer", artifact, image), "signature")


@pytest.mark.parametrize("tamper", ["manifest", "model", "added file", "removed file"])
def test_any_change_after_signing_is_refused(tmp_path, keys, image, tamper):
    """Even a consistent re-hash (model swapped and its sha256 rewritten in the manifest) is refused."""
    artifact = write_artifact(tmp_path / "a", pool_model(), pool_manifest(), {"notes/readme.txt": b"hello"})
    sign_artifact(artifact, keys["builder"][0])
    if tamper in ("manifest", "model"):
        other = pool_model(size=(32, 32)) if tamper == "model" else pool_model()
        manifest = {**pool_manifest(), "arch": "evil"} if tamper == "manifest" else pool_manifest()
        write_artifact(artifact, other, manifest, {"notes/readme.txt": b"hello"})  # hashes consistent again
    elif tamper == "added file":
        (artifact / "extra.bin").write_bytes(b"x")
    else:
        (artifact / "notes" / "readme.txt").unlink()
    _refused(_infer("--trusted-key", keys["builder"][1], "infer", artifact, image), "signature")


def test_library_call_refuses_a_wrong_signature(tmp_path, keys):
    artifact = _artifact(tmp_path)
    sign_artifact(artifact, keys["builder"][0])
    assert open_artifact(artifact, trusted_key=keys["builder"][1]).manifest["arch"] == "pool-test"
    with pytest.raises(ArtifactError, match="signature"):
        open_artifact(artifact, trusted_key=keys["other"][1])


def test_a_non_ec_key_is_a_one_line_error(tmp_path):
    artifact = _artifact(tmp_path)
    (tmp_path / "key.pem").write_text("not a key")
    result = CliRunner().invoke(main, ["sign", str(artifact), "--key", str(tmp_path / "key.pem")])
    _refused(result, "signing key")
    assert not (artifact / "signature.sig").exists()
