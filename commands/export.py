"""`lbdeploy export`: model.pt -> artifact folder for a target (thin wrapper over export_model)."""

from __future__ import annotations

import click

from lbdeploy.exporters.calibration import DEFAULT_DATA, DEFAULT_IMAGES, METHODS, CalibrationOptions
from lbdeploy.exporters.export import OPSETS
from lbdeploy.exporters.quantize import PRECISIONS
from lbdeploy.backends import EXPORT_BACKENDS
from lbdeploy.outputs import check_output_folder
from lbdeploy.targets import target_names


@click.command("export")
@click.argument("model_pt", type=click.Path(dir_okay=False))
@click.option("--target", type=click.Choice(target_names()), default="onnx",
              help="Where the artifact runs (`lbdeploy targets` lists each with its backends).")
@click.option("--backend", type=click.Choice(EXPORT_BACKENDS), default=None,
              help="Inference engine (default: the target's first, see `lbdeploy targets`).")
@click.option("--ops", type=click.Choice(["custom", "standard"]), default="custom",
              help="custom: TernaryConv op (add/sub kernels); standard: plain Conv for any runtime.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Artifact folder to create.")
@click.option("--opset", type=int, default=18, help=f"ONNX opset ({OPSETS.start}..{OPSETS.stop - 1}).")
@click.option("--verify/--no-verify", default=True, help="Fail when the parity gate fails (--no-verify: keep and report).")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--quantize", type=click.Choice(PRECISIONS), default=None,
              help="Quantize (static, calibrated; the accuracy gate replaces the parity gate; docs/export.md).")
@click.option("--calibration", "calibration_data", default=DEFAULT_DATA, metavar="DATA",
              help="int8 calibration images: synthetic[:N,M], mpii:PATH, lsp:PATH or a folder of images.")
@click.option("--calibration-images", type=int, default=DEFAULT_IMAGES, help="Number of int8 calibration images.")
@click.option("--calibration-method", type=click.Choice(METHODS), default=METHODS[0],
              help="How activation ranges are chosen from the calibration images.")
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Sign the artifact with this PEM elliptic-curve private key (docs/signing.md).")
def export(model_pt, target, backend, ops, out_dir, opset, verify, force, quantize, calibration_data,
           calibration_images, calibration_method, sign_key):
    """Export a model.pt to an artifact folder (ONNX + kernels + manifest), checked against PyTorch.

    \b
    Example:
      lbdeploy create lbrn-s --stacks 2 -o m.pt
      lbdeploy export m.pt --target x86 -o out/
      lbdeploy export m.pt --target arm64 -o out-arm/
      lbdeploy export m.pt --target jetson-orin -o out-jetson/
      lbdeploy export m.pt --target x86 --quantize int8 -o out-int8/
    """
    from lbdeploy.exporters.export import export_model

    check_output_folder(out_dir, "-o")
    calibration = CalibrationOptions(calibration_data, calibration_images, calibration_method) if quantize else None
    manifest = export_model(model_pt, out_dir, target=target, backend=backend, ops=ops, verify=verify, opset=opset,
                            force=force, quantize=quantize, calibration=calibration,
                            progress=lambda message: click.echo(message, err=True), sign_key=sign_key)
    gate = "accuracy" if quantize else "parity"
    status = "passed" if manifest[gate]["passed"] else "FAILED (kept: --no-verify)"
    click.echo(f"Wrote {out_dir} (target {target}, backend {manifest['backend']}, {manifest['precision']}, "
               f"{gate} {status})")


COMMANDS = [export]
