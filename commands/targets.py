"""`lbdeploy targets`: every `--target` value with its machine and backends (lbdeploy/targets.py).

The command is thin: it reads the target registry and prints it. To add a board, add a record to
lbdeploy/targets.py; it shows up here and in `--target`, and `lbdeploy targets --markdown >
docs/targets.md` regenerates the table of the docs (tests/test_architecture.py compares them).
"""

from __future__ import annotations

import dataclasses
import json

import click

from lbdeploy.targets import TARGETS, target_table_markdown


def _settings(settings) -> dict:
    return dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings or {})


def _row(target) -> dict:
    return {"name": target.name, "aliases": list(target.aliases), "description": target.description,
            "arch": target.arch, "isa": list(target.isa),
            "gpu": dataclasses.asdict(target.gpu) if target.gpu else None,
            "backends": {name: _settings(settings) for name, settings in target.served().items()},
            "default_backend": target.default_backend}


@click.command("targets")
@click.option("--json", "as_json", is_flag=True, default=False,
              help="Print the records as JSON (with each backend's settings, e.g. TVM target dicts).")
@click.option("--markdown", is_flag=True, default=False,
              help="Print the table of docs/targets.md (lbdeploy targets --markdown > docs/targets.md).")
def targets_cmd(as_json: bool, markdown: bool):
    """List every target `lbdeploy export --target T` accepts, with the backends that serve it.

    The first backend of a target is its default. `x86` is this machine's CPU (TVM detects it
    through LLVM when compiling). ARM and Jetson presets cross-compile with aarch64-linux-gnu-gcc;
    Jetson GPU presets emit PTX through LLVM's nvptx back end for TVM, or carry the TensorRT
    plugin sources for an engine built on the board.

    \b
    Example:
      lbdeploy targets
      lbdeploy targets --json
      lbdeploy targets --markdown > docs/targets.md
      lbdeploy export m.pt --target rpi4 --backend tvm -o out/
    """
    if as_json:
        click.echo(json.dumps([_row(target) for target in TARGETS.values()], indent=2))
        return
    if markdown:
        click.echo(target_table_markdown(), nl=False)
        return
    width = max(len(name) for name in TARGETS)
    for target in TARGETS.values():
        aliases = f" (also: {', '.join(target.aliases)})" if target.aliases else ""
        click.echo(f"{target.name:<{width}}  {target.arch or 'host':<7}  {', '.join(target.served()):<18}  "
                   f"{target.description}{aliases}")


COMMANDS = [targets_cmd]
