"""The `lbdeploy` command line: a root click group; each area adds its commands.

Commands are thin: they parse options, call the library, print. Every `LbdeployError` becomes a
one-line `Error: ...` message with exit code 2, never a traceback. Heavy imports (torch, TVM,
TensorRT) happen inside the command that needs them.

To add a command, write it in the area's module of the `commands` package (the top layer, see
docs/architecture.md) and list that module in COMMAND_MODULES.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from lbdeploy import __version__
from lbdeploy.errors import LbdeployError
from lbdeploy.extras import missing_extra_error
from lbdeploy.signing import TRUSTED_KEY_ENV

COMMAND_MODULES = (
    "lbdeploy.commands.models",
    "lbdeploy.commands.export",
    "lbdeploy.commands.runtime",
    "lbdeploy.commands.train",
    "lbdeploy.commands.targets",
    "lbdeploy.commands.tensorrt",
    "lbdeploy.commands.profile",
    "lbdeploy.commands.doctor",
    "lbdeploy.commands.trust",
    "lbdeploy.commands.bundle",
)


class _Group(click.Group):
    """Root group that turns lbdeploy errors into one line and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LbdeployError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(2)
        except ModuleNotFoundError as err:  # an optional extra (torch on a board install) is missing
            missing = missing_extra_error(err)
            if missing is None:
                raise
            click.echo(f"Error: {missing}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="lbdeploy")
@click.option("--trusted-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM public key: every artifact must carry a valid signature by its private key "
                   "(default: $LBDEPLOY_TRUSTED_KEY; docs/signing.md).")
def main(trusted_key):
    """lbdeploy: deploy Local-Binarized Residual Networks (LBRN) to Jetson, Raspberry Pi and x86.

    \b
    Example:
      lbdeploy create lbrn-s --stacks 2 -o m.pt
      lbdeploy export m.pt --target x86 -o out/
      lbdeploy infer out/ image.jpg --draw pose.png
    """
    if trusted_key:  # through the environment, so server workers and Ray replicas check it too
        os.environ[TRUSTED_KEY_ENV] = os.path.abspath(trusted_key)


for _module in COMMAND_MODULES:
    for _command in importlib.import_module(_module).COMMANDS:
        main.add_command(_command)


if __name__ == "__main__":
    main()
