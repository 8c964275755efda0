"""`lbdeploy doctor`: what this machine lacks to run an artifact or a backend (runtime/doctor.py)."""

from __future__ import annotations

import sys

import click

from lbdeploy.backends import backend_names


@click.command("doctor")
@click.argument("artifact", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--backend", "backends", multiple=True, type=click.Choice(backend_names()),
              help="Check this backend (repeatable; default: every backend, or the artifact's).")
def doctor(artifact, backends):
    """Check this machine for what ARTIFACT (or each backend) needs: packages, our kernel library,
    TVM's device, TensorRT, cuda-python, the CUDA driver and a GPU, the plugin and the engine.

    One line per check, with the command that fixes what is missing. Exit code 0 only when
    everything checked is there, 1 otherwise.

    \b
    Example:
      lbdeploy doctor out-jetson/
      lbdeploy doctor --backend ort --backend tvm
    """
    from lbdeploy.runtime.doctor import diagnose

    if artifact and backends:
        raise click.UsageError("pass an ARTIFACT (its backend is checked) or --backend, not both")
    report = diagnose(artifact, list(backends) or None)
    for line in report.lines():
        click.echo(line)
    sys.exit(0 if report.ok else 1)


COMMANDS = [doctor]
