"""Model commands of the CLI: `lbdeploy create`, `lbdeploy import`, `lbdeploy inspect`, `lbdeploy models`.

Thin wrappers: parse, call lbdeploy.models / lbdeploy.checkpoint / lbdeploy.analysis, print.
"""

from __future__ import annotations

import json
import time

import click

from lbdeploy.errors import ConfigError
from lbdeploy.outputs import check_output_file


def parse_size(text: str | None):
    """'256x192' or '256' -> (256, 192) / (256, 256); None stays None."""
    if text is None:
        return None
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--input-size must look like 256x256, got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) <= 0:
        raise ConfigError(f"--input-size must look like 256x256, got {text!r}")
    return tuple(values)


def preset_options(command):
    """The options that change a preset's config (`create` and `import` share them)."""
    options = [
        click.option("--stacks", type=int, help="Number of stacked hourglasses (1-8)."),
        click.option("--modules", type=int, help="Residual modules per hourglass position (nModules)."),
        click.option("--feats", type=int, help="Feature channels of the hourglass (nFeats)."),
        click.option("--density", type=float, help="Fraction of non-zero ternary weights (the paper's sparsity level)."),
        click.option("--seed", type=int, help="Seed of the ternary weights."),
        click.option("--joints", type=click.Choice(["16", "14"]), help="16 (MPII) or 14 (LSP) joints."),
        click.option("--classes", type=int, help="Classes of a CIFAR ResNet (10 or 100)."),
        click.option("--backbone", type=click.Choice(["vgg16", "resnet50"]), help="Backbone of a CPD saliency network."),
        click.option("--width", type=int, help="Base width of a CPD backbone (64 as in VGG16 / ResNet50)."),
        click.option("--channels", type=int, help="Decoder channels of a CPD network (32 as in CPD)."),
        click.option("--input-size", help="Input HxW, multiples of 64 for hourglass networks (e.g. 256x256)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def preset_overrides(stacks, modules, feats, density, seed, joints, classes, backbone, width, channels,
                     input_size) -> dict:
    """The config overrides given by `preset_options` (options left out keep the preset's value)."""
    options = {"stacks": stacks, "modules": modules, "feats": feats, "density": density, "seed": seed,
               "joints": int(joints) if joints else None, "classes": classes, "backbone": backbone, "width": width,
               "channels": channels, "input_size": parse_size(input_size)}
    return {k: v for k, v in options.items() if v is not None}


@click.command("create")
@click.argument("arch")
@preset_options
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="model.pt to write.")
def create(arch, output, **options):
    """Create an untrained network from a preset and save it as model.pt.

    Its BatchNorm statistics are calibrated on a few synthetic images, so the untrained model
    gives finite, moderate outputs when exported, profiled or served (docs/models.md).

    \b
    Example:
      lbdeploy create lbrn-s --stacks 8 --density 0.5 --seed 0 -o m.pt
      lbdeploy create resnet-lbb-56 --classes 100 -o cifar.pt
      lbdeploy create cpd-lb --backbone resnet50 -o cpd.pt
    """
    from lbdeploy.checkpoint import save_checkpoint
    from lbdeploy.models import create_model

    overrides = preset_overrides(**options)
    check_output_file(output, "-o")
    started = time.perf_counter()
    model = create_model(arch, progress=lambda message: click.echo(message, err=True), **overrides)
    path = save_checkpoint(output, model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    click.echo(f"Wrote {path} ({arch}, {trainable:,} trainable parameters) in {time.perf_counter() - started:.1f} s")


@click.command("import")
@click.argument("state_dict_pt", type=click.Path(dir_okay=False))
@click.argument("arch")
@preset_options
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="model.pt to write.")
def import_command(state_dict_pt, arch, output, **options):
    """Turn a bare state_dict of one of our presets into a model.pt.

    STATE_DICT_PT is what `torch.save(model.state_dict(), path)` wrote for a network built from
    preset ARCH (see `lbdeploy models`); pass the options it was built with, as for `create`.
    The file is read weights-only (no code runs) and must fit the network exactly.

    \b
    Example:
      lbdeploy import weights.pth lbrn-s --stacks 2 -o m.pt
      lbdeploy import cifar.pth resnet-lbb-56 --classes 100 -o cifar.pt
    """
    from lbdeploy.checkpoint import import_state_dict, save_checkpoint

    check_output_file(output, "-o")
    model = import_state_dict(state_dict_pt, arch, **preset_overrides(**options))
    path = save_checkpoint(output, model, {"imported_from": "state_dict"})
    click.echo(f"Wrote {path} ({arch} from the state_dict {state_dict_pt})")


def _layer_rows(analysis) -> list[str]:
    rows = [f"{'layer':<42} {'kind':<8} {'in':>5} {'out':>5} {'k':>4} {'out HxW':>9} {'trainable':>10} "
            f"{'ternary':>9} {'MFLOPs':>9} {'M adds':>8}"]
    for l in analysis.layers:
        rows.append(f"{l.name[:42]:<42} {l.kind:<8} {l.in_channels:>5} {l.out_channels:>5} {l.kernel[0]:>2}x{l.kernel[1]:<1} "
                    f"{l.output_hw[0]:>4}x{l.output_hw[1]:<4} {l.trainable_params:>10,} {l.fixed_params:>9,} "
                    f"{l.flops / 1e6:>9.1f} {l.additions / 1e6:>8.1f}")
    return rows


def _summary(analysis) -> str:
    a = analysis
    rows = [
        f"arch                 {a.arch} @ {a.input_size[0]}x{a.input_size[1]}",
        f"trainable params     {a.trainable_params:,} ({a.trainable_params / 1e6:.3f} M, BN and biases included)",
        f"fixed ternary params {a.fixed_params:,} in {a.ternary_layers} layers, density {a.density}",
        f"FLOPs (real convs)   {a.flops / 1e9:.3f} G  (paper Eq. 7, bias omitted)",
        f"ternary additions    {a.ternary_additions / 1e9:.3f} G  (one add/sub per non-zero per output pixel)",
        f"weights              {a.bytes_fp32 / 1e6:.2f} MB as fp32, {a.bytes_packed / 1e6:.2f} MB with 2-bit ternary",
    ]
    from lbdeploy.analysis import paper_totals

    paper = paper_totals(a.arch)
    if paper:
        rows.append(f"{'paper (' + paper['source'] + ')':<21}{paper['trainable_params'] / 1e6:.2f} M trainable params, "
                    f"{paper['flops'] / 1e9:.3f} G FLOPs (why ours differ: docs/models.md)")
    return "\n".join(rows)


@click.command("inspect")
@click.argument("model_pt", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--layers/--no-layers", default=True, help="Include per-layer rows (after the summary).")
def inspect(model_pt, as_json, layers):
    """Show trainable/fixed parameters, FLOPs and weight bytes of a model.pt.

    For LBRN models it also shows what each ternary density buys: TernaryConv time relative to a
    dense conv (measured by bench/run.py --save-advice) next to the paper's accuracy per density.

    \b
    Example:
      lbdeploy inspect m.pt
      lbdeploy inspect m.pt --json --no-layers
    """
    from lbdeploy.analysis import analyze, paper_totals
    from lbdeploy.checkpoint import load_model
    from lbdeploy.density_advice import density_advice, format_advice, load_results

    model, ckpt = load_model(model_pt)
    analysis = analyze(model)
    advice = density_advice(analysis.density, load_results()) if analysis.ternary_layers else None
    if as_json:
        data = analysis.to_dict(per_layer=layers)
        data["config"] = ckpt.config
        data["paper"] = paper_totals(analysis.arch)
        data["metadata"] = ckpt.metadata
        data["density_advice"] = advice
        click.echo(json.dumps(data, indent=2))
    else:
        summary = [_summary(analysis), *(format_advice(advice) if advice else [])]
        if layers:  # the summary first: a deep model has hundreds of layer rows
            summary += ["", f"{len(analysis.layers)} layers (--no-layers leaves them out):", *_layer_rows(analysis)]
        click.echo("\n".join(summary))


@click.command("models")
def models():
    """List the model presets.

    \b
    Example:
      lbdeploy models
    """
    from lbdeploy.models import get_preset, list_models

    for name in list_models():
        click.echo(f"{name:<16} {get_preset(name).description}")


COMMANDS = [create, import_command, inspect, models]
