"""`lbdeploy sign` and `lbdeploy verify`: signed artifacts and their re-check (docs/signing.md)."""

from __future__ import annotations

import sys

import click


@click.command("sign")
@click.argument("artifact", type=click.Path(exists=True, file_okay=False))
@click.option("--key", "private_key", required=True, type=click.Path(exists=True, dir_okay=False),
              help="PEM elliptic-curve private key (P-256, P-384 or P-521).")
@click.option("--password-env", default=None, metavar="VAR",
              help="Environment variable holding the key's password, if it is encrypted.")
def sign(artifact, private_key, password_env):
    """Sign every file of ARTIFACT (manifest included) into ARTIFACT/signature.sig.

    Boards that trust the matching public key (`--trusted-key` or $LBDEPLOY_TRUSTED_KEY) then
    refuse any artifact that is unsigned, signed by another key, or changed after signing.

    \b
    Example:
      lbdeploy sign out/ --key signing-key.pem
      LBDEPLOY_TRUSTED_KEY=signing-pub.pem lbdeploy verify out/
    """
    import os

    from lbdeploy.artifact import open_artifact
    from lbdeploy.signing import sign_artifact

    open_artifact(artifact, trusted_key="")  # sign only what verifies: hashes, containment, schema
    password = os.environ.get(password_env) if password_env else None
    click.echo(f"wrote {sign_artifact(artifact, private_key, password)}")


@click.command("verify")
@click.argument("artifact", type=click.Path(exists=True, file_okay=False))
@click.option("--backend", default="auto", help="Backend that runs the stored reference (default: the artifact's).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads for the reference run.")
def verify(artifact, backend, threads):
    """Re-check ARTIFACT without PyTorch: its signature (with a trusted key), every file's sha256
    and containment, and the stored reference outputs, run here on the artifact's backend.

    Exit code 0 when everything holds, 1 when the reference outputs differ, 2 when the folder is
    refused (modified, escaping or wrongly signed files).

    \b
    Example:
      lbdeploy verify out/
      lbdeploy --trusted-key signing-pub.pem verify out/
    """
    from lbdeploy.exporters.verify import verify_artifact

    report = verify_artifact(artifact, backend=backend, threads=threads)
    for line in report.lines():
        click.echo(line)
    sys.exit(0 if report.ok else 1)


COMMANDS = [sign, verify]
