"""`lbdeploy export`: model.pt -> artifact folder for a target (thin wrapper over export_model)."""

from __future__ import annotations

import click

from lbdeploy.exporters.calibration import DEFAULT_DATA, DEFAULT_IMAGES, METHODS, CalibrationOptions
from lbdeploy.exporters.export import OPSETS
from lbdeploy.exporters.kernel_choice import MODES, OPS
from lbdeploy.exporters.precision import QUANTIZED
from lbdeploy.backends import export_backends
from lbdeploy.outputs import check_output_folder
from lbdeploy.targets import target_names


@click.command("export")
@click.argument("model_pt", type=click.Path(dir_okay=False))
@click.option("--target", type=click.Choice(target_names()), default="onnx",
              help="Where the artifact runs (`lbdeploy targets` lists each with its backends).")
@click.option("--backend", type=click.Choice(export_backends()), default=None,
              help="Inference engine (default: the target's first, see `lbdeploy targets`).")
@click.option("--ops", type=click.Choice(OPS), default=None,
              help="custom: our TernaryConv op may be used; standard: plain ONNX ops only, for any runtime "
                   "(default: what the backend runs).")
@click.option("--kernels", type=click.Choice(MODES), default="auto",
              help="Each ternary layer as our op (ternary), as the runtime's conv (dense), or whichever is faster "
                   "where the artifact runs (auto: measured when exporting for this machine, else a cost model).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads the artifact will run with, for measuring --kernels auto (default: all cores).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Artifact folder to create.")
@click.option("--opset", type=int, default=18, help=f"ONNX opset ({OPSETS.start}..{OPSETS.stop - 1}).")
@click.option("--verify/--no-verify", default=True, help="Fail when the parity gate fails (--no-verify: keep and report).")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--quantize", type=click.Choice(QUANTIZED), default=None,
              help="Quantize (static, calibrated; the accuracy gate replaces the parity gate; docs/export.md).")
@click.option("--calibration", "calibration_data", default=DEFAULT_DATA, metavar="DATA",
              help="int8 calibration images: synthetic[:N,M], mpii:PATH, lsp:PATH or a folder of images.")
@click.option("--calibration-images", type=int, default=DEFAULT_IMAGES, help="Number of int8 calibration images.")
@click.option("--calibration-method", type=click.Choice(METHODS), default=METHODS[0],
              help="How activation ranges are chosen from the calibration images.")
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Sign the artifact with this PEM elliptic-curve private key (docs/signing.md).")
def export(model_pt, target, backend, ops, kernels, threads, out_dir, opset, verify, force, quantize, calibration_data,
           calibration_images, calibration_method, sign_key):
    """Export a model.pt to an artifact folder (ONNX + kernels + manifest), checked against PyTorch.

    The traced graph is cached ($LBDEPLOY_CACHE/traces): exporting the same model again, for
    another target or backend, skips the trace (LBDEPLOY_TRACE_CACHE=off turns this off).

    \b
    Example:
      lbdeploy create lbrn-s --stacks 2 -o m.pt
      lbdeploy export m.pt --target x86 -o out/
      lbdeploy export m.pt --target arm64 -o out-arm/
      lbdeploy export m.pt --target jetson-orin -o out-jetson/
      lbdeploy export m.pt --target x86 --quantize int8 -o out-int8/
      lbdeploy export m.pt --target x86 --quantize int8 --ops standard -o out-int8-ort/
    """
    from lbdeploy.exporters.export import export_model

    check_output_folder(out_dir, "-o")
    calibration = CalibrationOptions(calibration_data, calibration_images, calibration_method) if quantize else None
    manifest = export_model(model_pt, out_dir, target=target, backend=backend, ops=ops, verify=verify, opset=opset,
                            force=force, quantize=quantize, calibration=calibration, kernels=kernels, threads=threads,
                            progress=lambda message: click.echo(message, err=True), sign_key=sign_key)
    gate = manifest["reference"]["gate"]
    status = "passed" if manifest[gate]["passed"] else "FAILED (kept: --no-verify)"
    layers = manifest["kernels"]["layers"]
    ours = sum(row["choice"] == "ternary" for row in layers)
    click.echo(f"Wrote {out_dir} (target {target}, backend {manifest['backend']}, {manifest['precision']}, "
               f"{gate} {status}; kernels {kernels}: {ours} of {len(layers)} ternary layers as our op, "
               f"{manifest['kernels']['method']})")


@click.command("tune")
@click.argument("artifact", type=click.Path(file_okay=False, exists=True))
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads to measure with (default: those the artifact was exported for).")
def tune(artifact, threads):
    """Re-measure each ternary layer's kernel on this machine and rewrite ARTIFACT's choice in place.

    Measures our op against the runtime's conv layer by layer, keeps the faster mix (never slower
    than all-ours or all-dense as measured), re-checks the outputs against the reference the
    artifact keeps, updates the hashes and swaps the folder atomically. Prints the per-layer table
    (Markdown, to paste into an issue).

    \b
    Example:
      lbdeploy tune out/ --threads 4
    """
    from lbdeploy.exporters.kernel_choice import choice_table
    from lbdeploy.exporters.tune import tune_artifact

    manifest = tune_artifact(artifact, threads=threads, progress=lambda message: click.echo(message, err=True))
    click.echo(choice_table(manifest["kernels"], machine=True))
    click.echo(f"\nRewrote {artifact} (re-check {manifest['kernels']['recheck'].get('passed') and 'passed'})")


COMMANDS = [export, tune]
