"""`lbdeploy bundle`: one archive from this machine to a board (workflows/bundle.py)."""

from __future__ import annotations

from pathlib import Path

import click

from lbdeploy.board_os import BOARD_OSES
from lbdeploy.targets import target_names


@click.command("bundle")
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--target", type=click.Choice(target_names()), default=None,
              help="The board (default: the artifact's target).")
@click.option("--os", "board_os", type=click.Choice(list(BOARD_OSES)), default=None,
              help="The board's system: its Python and JetPack (default: the target's; docs/tensorrt.md).")
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The archive to write, NAME.tar.gz (unpacks into NAME/).")
@click.option("--wheels/--no-wheels", default=True,
              help="Carry the board's wheels (installs without network) or let the board download the pinned ones.")
@click.option("--force", is_flag=True, default=False, help="Replace an existing archive.")
def bundle_cmd(artifact: Path, target, board_os, out_path: Path, wheels: bool, force: bool):
    """Pack ARTIFACT for a board: the artifact, lbdeploy's wheel built from this checkout, requirements
    pinned for the board's OS and Python, the board's wheels, install.sh and a README.

    On the board, two commands go from copy to first inference:
    `tar xzf NAME.tar.gz` and `sh NAME/install.sh`. Needs PyPI here (pip resolves and downloads).

    \b
    Example:
      lbdeploy export m.pt --target rpi5 -o out-rpi/
      lbdeploy bundle out-rpi/ -o board.tar.gz
      lbdeploy bundle out-jetson/ --os jetpack6.1 -o jetson.tar.gz
    """
    from lbdeploy.workflows.bundle import make_bundle

    made = make_bundle(artifact, out_path, target=target, board_os=board_os, wheels=wheels, force=force,
                       progress=lambda line: click.echo(line, err=True))
    click.echo(f"wrote {made.path} ({made.size_bytes / 1e6:.1f} MB): {made.target} on {made.board_os}, "
               f"Python {made.python}, {len(made.requirements)} pinned requirements"
               + (", their wheels inside" if made.offline else ""))
    click.echo(f"on the board: tar xzf {made.path.name} && sh {made.folder}/install.sh")


COMMANDS = [bundle_cmd]
