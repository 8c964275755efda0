"""Signed artifacts (docs/signing.md): OpenSSF model-signing over the whole artifact folder.

The manifest's sha256 list catches corruption, but whoever can write the folder can rewrite the
list too. A signature made with a private elliptic-curve key (P-256/384/521) that only the
builder holds closes that: `sign_artifact` signs every file of the folder, manifest.json
included, into `signature.sig` (a Sigstore bundle, the format `model_signing` writes), and
`verify_signature` checks it with the public key before anything of the folder is read.

How manifest and signature relate: the manifest lists every file but itself and the signature
(their sha256); the signature covers every file, the manifest among them, but itself. So
`lbdeploy verify` and every load check the manifest's hashes as before, and with a trusted key
the signature first: an added, removed or changed file, or a changed manifest, is refused.

A trusted public key comes from `--trusted-key` (the CLI sets LBDEPLOY_TRUSTED_KEY from it) or
from the LBDEPLOY_TRUSTED_KEY environment variable; with one configured, `open_artifact` refuses an
unsigned or wrongly signed artifact in one line. The signing and hashing are model-signing's; this
module only points it at the folder and turns its errors into ours.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lbdeploy.artifact import PARTIAL_MARKER, SIGNATURE_NAME
from lbdeploy.errors import ArtifactError, ConfigError
from lbdeploy.extras import missing_extra_error

TRUSTED_KEY_ENV = "LBDEPLOY_TRUSTED_KEY"


def _model_signing():
    try:
        import model_signing
    except ModuleNotFoundError as err:
        raise missing_extra_error(err) or err from None
    return model_signing


def _hashing_config(model_signing):
    """Every file of the folder but the signature itself and an export's in-progress marker (which the
    export removes before the folder takes its place); git files are not skipped."""
    return model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE_NAME, PARTIAL_MARKER],
                                                            ignore_git_paths=False)


def trusted_key(explicit=None) -> Path | None:
    """The public key to verify artifacts with: `explicit`, else $LBDEPLOY_TRUSTED_KEY, else None
    (an empty `explicit` means none, whatever the environment says).

    Raises:
        ConfigError: the key file named does not exist.
    """
    value = explicit if explicit is not None else os.environ.get(TRUSTED_KEY_ENV)
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"the trusted public key {path} (--trusted-key or ${TRUSTED_KEY_ENV}) does not exist")
    return path


def sign_artifact(folder, private_key, password: str | None = None) -> Path:
    """Sign every file of the artifact `folder` with the PEM elliptic-curve `private_key`.

    The signature is written beside (outside) the folder first and then renamed into it as
    signature.sig, replacing an earlier signature.

    Returns:
        The path of signature.sig. Raises: ConfigError: an unreadable or unsupported key;
        ArtifactError: `folder` is not a folder or cannot be hashed (a symlink in it, say).
    """
    model_signing = _model_signing()
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder} is not an artifact folder")
    try:
        config = model_signing.signing.Config().use_elliptic_key_signer(private_key=Path(private_key),
                                                                       password=password)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"cannot use {private_key} as a signing key ({str(err).splitlines()[0][:160]}); "
                          "pass a PEM elliptic-curve private key (P-256, P-384 or P-521)") from None
    handle, staged = tempfile.mkstemp(prefix=f".{folder.name}.sig-", dir=folder.parent)
    os.close(handle)
    try:
        config.set_hashing_config(_hashing_config(model_signing)).sign(folder, staged)
        os.replace(staged, folder / SIGNATURE_NAME)
    except (OSError, ValueError) as err:
        raise ArtifactError(f"cannot sign {folder}: {str(err).splitlines()[0][:200]}") from None
    finally:
        if os.path.exists(staged):
            os.unlink(staged)
    return folder / SIGNATURE_NAME


def verify_signature(folder, public_key) -> None:
    """Check that signature.sig in `folder` was made with the key paired to `public_key` over exactly these files.

    Raises:
        ArtifactError: no signature, a signature by another key, or files added, removed or
            changed since signing (the message names them).
        ConfigError: the public key cannot be read.
    """
    model_signing = _model_signing()
    folder = Path(folder)
    signature = folder / SIGNATURE_NAME
    if not signature.is_file():
        raise ArtifactError(f"{folder} is not signed (no {SIGNATURE_NAME}) and a trusted key is configured "
                            f"({public_key}); refusing it: sign it with `lbdeploy sign {folder} --key PRIVATE.pem`")
    try:
        config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=Path(public_key))
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"cannot use {public_key} as a trusted public key ({str(err).splitlines()[0][:160]})") from None
    try:
        config.set_hashing_config(_hashing_config(model_signing)).verify(folder, signature)
    except Exception as err:  # model-signing raises ValueError and the crypto libraries' own types
        detail = " ".join(str(err).split())[:300] or type(err).__name__
        raise ArtifactError(f"{folder} fails its signature check against {public_key}: {detail}; refusing it") from None
