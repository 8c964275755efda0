"""`lbdeploy doctor`: what this machine lacks to run an artifact, a target or a backend (runtime/doctor.py)."""

from __future__ import annotations

import sys

import click

from lbdeploy.backends import backend_names
from lbdeploy.targets import target_names


@click.command("doctor")
@click.argument("artifact", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--target", type=click.Choice(target_names()), default=None,
              help="Check what this target's backends need (its default backend required, the others optional).")
@click.option("--backend", "backends", multiple=True, type=click.Choice(backend_names()),
              help="Check this backend (repeatable).")
def doctor(artifact, target, backends):
    """Check this machine for what ARTIFACT (or a target, or a backend) needs: packages, our kernel
    library, the TVM module's CPU and device, JetPack, TensorRT, cuda-python, the CUDA driver, the
    plugin and the engine. Only what is needed is judged: without arguments, what this machine's
    own target needs (`x86` or `arm64`; other backends and torch are optional).

    One line per check, with the command that fixes what is missing (`--` marks an optional
    backend that is not installed). Exit code 0 when everything required is there, 1 otherwise.

    \b
    Example:
      lbdeploy doctor out-jetson/
      lbdeploy doctor --target jetson-orin
      lbdeploy doctor --backend ort --backend tvm
    """
    from lbdeploy.runtime.doctor import diagnose

    if artifact and (backends or target):
        raise click.UsageError("pass an ARTIFACT (its backend is checked), or --target / --backend, not both")
    if target and backends:
        raise click.UsageError("pass --target (its backends are checked) or --backend, not both")
    report = diagnose(artifact, list(backends) or None, target)
    for line in report.lines():
        click.echo(line)
    sys.exit(0 if report.ok else 1)


COMMANDS = [doctor]
