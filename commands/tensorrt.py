"""`lbdeploy build-engine`: build an artifact's TensorRT engine on the Jetson that will run it.

The command is thin: it parses options and calls exporters.tensorrt_engine.build_engine. To add an
option, add it to build_engine first, then here.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("build-engine")
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--fp16/--fp32", default=False, help="Allow float16 kernels (TernaryConv accumulates in float32).")
@click.option("--workspace", "workspace_mb", type=click.IntRange(min=1), default=1024, metavar="MB",
              help="TensorRT workspace limit in MiB.")
@click.option("--min-batch", type=click.IntRange(min=1), default=1, help="Smallest batch the engine accepts.")
@click.option("--opt-batch", type=click.IntRange(min=1), default=1, help="Batch the engine is tuned for.")
@click.option("--max-batch", type=click.IntRange(min=1), default=1, help="Largest batch the engine accepts.")
@click.option("--trust-plugin", is_flag=True,
              help="Record the plugin library you built here with tensorrt/build.sh (its sha256) in the manifest; "
                   "without it an unlisted library is refused, never loaded.")
def build_engine_cmd(artifact: Path, fp16: bool, workspace_mb: int, min_batch: int, opt_batch: int, max_batch: int,
                     trust_plugin: bool):
    """Build ARTIFACT/tensorrt/model.engine from model.onnx with TensorRT, on this device.

    Run it on the Jetson after `bash ARTIFACT/tensorrt/build.sh` has built the TernaryConv plugin
    library. The engine only runs on this GPU model with this TensorRT version. The timing cache
    (tensorrt/timing.cache) makes rebuilds faster.

    \b
    Example:
      bash out/tensorrt/build.sh
      lbdeploy build-engine out/ --fp16 --trust-plugin
      lbdeploy build-engine out/ --min-batch 1 --opt-batch 4 --max-batch 8
    """
    from lbdeploy.exporters.tensorrt_engine import build_engine

    engine = build_engine(artifact, fp16=fp16, workspace_mb=workspace_mb, min_batch=min_batch,
                          opt_batch=opt_batch, max_batch=max_batch, trust_plugin=trust_plugin)
    click.echo(f"wrote {engine}")


COMMANDS = [build_engine_cmd]
