"""`lbdeploy targets`: list the TVM compile target presets (exporters/tvm/targets.py).

The command is thin: it reads the presets and prints them. To add a preset, edit
exporters/tvm/targets.py; it shows up here by itself.
"""

from __future__ import annotations

import json

import click


@click.command("targets")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print the presets as JSON (with TVM target dicts).")
def targets_cmd(as_json: bool):
    """List the TVM target presets that `lbdeploy export --backend tvm --target T` compiles for.

    x86 is this machine's CPU, detected through LLVM (it needs apache-tvm installed). ARM and
    Jetson presets cross-compile with aarch64-linux-gnu-gcc; Jetson presets emit PTX through
    LLVM's nvptx back end, so the board needs no NVRTC or nvcc.

    \b
    Example:
      lbdeploy targets
      lbdeploy targets --json
      lbdeploy export m.pt --target rpi4 --backend tvm -o out/
    """
    from exporters.tvm.targets import get_target, list_targets
    from lbdeploy.errors import LbdeployError

    rows = []
    for name in list_targets():
        try:
            preset = get_target(name)
        except (LbdeployError, ImportError) as err:
            rows.append({"name": name, "description": f"unavailable here: {err}", "arch": "-", "device": "-"})
            continue
        rows.append({"name": preset.name, "description": preset.description, "arch": preset.arch,
                     "device": "cuda" if preset.gpu else "cpu", "target": preset.target,
                     "cross_compiler": preset.cross_compiler})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        click.echo(f"{row['name']:<{width}}  {row['arch']:<7}  {row['device']:<4}  {row['description']}")


COMMANDS = [targets_cmd]
