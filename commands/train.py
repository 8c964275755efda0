"""Training and evaluation commands of the CLI: `lbdeploy train` and `lbdeploy eval`.

Thin wrappers: parse options, call lbdeploy.training.trainer / lbdeploy.evaluation (and
workflows.compare for --compare), print.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from lbdeploy.commands.models import parse_size
from lbdeploy.durations import format_duration
from lbdeploy.errors import ArtifactError, BackendUnavailable, ConfigError, KernelLibraryError
from lbdeploy.outputs import check_image_file, check_output_folder
from lbdeploy.runtime.backends.base import runtime_choices
from lbdeploy.workflows.compare import eval_columns, parse_backends

DATA_HELP = ("Dataset: mpii:PATH, lsp:PATH or synthetic[:TRAIN,VAL] (pose); saliency:PATH[,VAL_PATH] or "
             "synthetic-saliency[:TRAIN,VAL] (saliency); synthetic-cifar[:TRAIN,VAL] (classification, eval).")
ESTIMATE_FROM_PEOPLE = 10  # below this, timing one person first would cost as much as the evaluation
LONG_EVAL_S = 120.0  # above this, the estimate suggests --limit
QUICK_LOOK_S = 60.0  # what the suggested --limit takes


@click.command("train")
@click.option("--arch", default="lbrn-s", help="Model preset (a pose or saliency network, see `lbdeploy models`).")
@click.option("--data", "data", required=True, help=DATA_HELP)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Run folder (last.pt, best.pt, state.pt, log.jsonl).")
@click.option("--stacks", type=int, help="Stacked hourglasses (preset default if omitted).")
@click.option("--modules", type=int, help="Residual modules per hourglass position.")
@click.option("--feats", type=int, help="Feature channels of the hourglass.")
@click.option("--density", type=float, help="Fraction of non-zero ternary weights.")
@click.option("--backbone", type=click.Choice(["vgg16", "resnet50"]), help="Backbone of a CPD saliency network.")
@click.option("--width", type=int, help="Base width of a CPD backbone (64 as in VGG16 / ResNet50).")
@click.option("--channels", type=int, help="Decoder channels of a CPD network (32 as in CPD).")
@click.option("--input-size", help="Input HxW, multiples of 64 (e.g. 256x256).")
@click.option("--seed", type=int, default=0, help="Seed of the ternary weights, initialization, shuffling and augmentation.")
@click.option("--epochs", type=int, default=250, help="Epochs to train.")
@click.option("--batch-size", type=int, default=6, help="Mini-batch size (per process with torchrun).")
@click.option("--lr", type=float, default=2.5e-4, help="RMSprop learning rate.")
@click.option("--lr-drops", default="150,170,200", help="Epochs at which the learning rate is divided by 10 ('' for none).")
@click.option("--sigma", type=float, help="Target Gaussian sigma in heatmap pixels [default: 1 at 64x64 heatmaps, scaled].")
@click.option("--workers", type=int, default=2, help="DataLoader worker processes.")
@click.option("--threads", type=int, help="Torch CPU threads [default: torch's].")
@click.option("--val-limit", type=int, help="Validate on at most this many people per epoch.")
@click.option("--no-augment", is_flag=True, help="Train on plain crops (no scale/rotation/flip/colour augmentation).")
@click.option("--resume", is_flag=True, help="Continue the run in OUTPUT exactly where it stopped.")
@click.option("--init", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start a new run from this model.pt's weights (fine-tuning; same model options and --seed).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar with loss and images/s.")
def train_command(arch, data, output, stacks, modules, feats, density, backbone, width, channels, input_size, seed,
                  epochs, batch_size, lr, lr_drops, sigma, workers, threads, val_limit, no_augment, resume, init,
                  progress):
    """Train a pose network with the paper's recipe (RMSprop, MSE on every stack, augmentation).

    Writes OUTPUT/last.pt every epoch and OUTPUT/best.pt (best validation PCK); both are
    model.pt checkpoints for `lbdeploy export`. The fixed ternary weights are checked to be
    bit-identical to their seeded draw at the end. For several GPUs launch it with torchrun
    (see docs/training.md).

    \b
    Example:
      lbdeploy train --arch lbrn-s --data mpii:/data/mpii --stacks 8 -o runs/lbrn-s
      lbdeploy train --data synthetic:2000,200 --stacks 1 --feats 64 --input-size 128x128 \\
          --epochs 5 --batch-size 16 --lr-drops '' -o runs/demo
      lbdeploy train --data mpii:/data/mpii -o runs/lbrn-s --resume
      lbdeploy train --arch cpd-lb --data synthetic-saliency:64,16 --width 8 --channels 8 \\
          --input-size 64x64 --epochs 1 --batch-size 16 --lr-drops '' -o runs/cpd-demo
    """
    from lbdeploy.data.augment import NO_AUGMENTATION, AugmentConfig
    from lbdeploy.training.schedule import parse_drops
    from lbdeploy.training.trainer import TrainConfig, train

    check_output_folder(output, "-o")
    options = {"stacks": stacks, "modules": modules, "feats": feats, "density": density, "backbone": backbone,
               "width": width, "channels": channels, "input_size": parse_size(input_size)}
    config = TrainConfig(
        output=output, arch=arch, data=data, model_options={k: v for k, v in options.items() if v is not None},
        seed=seed, epochs=epochs, batch_size=batch_size, lr=lr, lr_drops=parse_drops(lr_drops), workers=workers,
        sigma=sigma, augment=NO_AUGMENTATION if no_augment else AugmentConfig(), val_limit=val_limit,
        threads=threads, progress=progress, resume=resume, init=init)
    train(config, log=click.echo)


@click.command("eval")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--data", "data", required=True, help=DATA_HELP)
@click.option("--split", type=click.Choice(["val", "train"]), default="val", help="Dataset split to evaluate.")
@click.option("--backend", type=click.Choice(runtime_choices()), default="auto",
              help="auto: torch for model.pt, the artifact's own otherwise.")
@click.option("--compare", help="Comma-separated backends to evaluate side by side, e.g. torch,ort (each on the sources it runs).")
@click.option("--flip", is_flag=True, help="Flip test: average with the mirrored crop.")
@click.option("--threshold", type=float, help="PCK threshold [default: the dataset's, 0.5 MPII / 0.2 LSP].")
@click.option("--norm", type=click.Choice(["head", "torso"]), help="PCK normalization [default: the dataset's].")
@click.option("--limit", type=int, help="Evaluate only the first N people (images on a saliency dataset).")
@click.option("--seed", type=int, default=0, help="Seed of the synthetic set (ignored for files).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write the PCK-vs-threshold curves as a PNG here (pose).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads of every backend.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar (never with --json).")
def eval_command(sources, data, split, backend, compare, flip, threshold, norm, limit, seed, as_json, plot, threads,
                 progress):
    """Evaluate pose accuracy (PCKh@0.5 on MPII, PCK@0.2 on LSP) per joint group, with a threshold curve;
    on a saliency dataset, MAE and max F-measure of a saliency model (CPD / CPD-LB); on a classification
    dataset, top-1 and top-5 accuracy of a classifier (ResNet-56 / ResNet-LBB-56).

    SOURCES are model.pt checkpoints and/or exported artifact folders; each column of the table is
    one (source, backend) pair, so `--compare torch,ort m.pt out/` shows PyTorch and ONNX Runtime
    side by side. With --compare, a model.pt is exported on the fly for ort/tvm on this machine
    (`--compare torch,ort m.pt` alone shows what export costs in accuracy). Before evaluating
    people, it times one person per column and prints the expected duration (and a --limit that
    gives a quick look when that is long).

    \b
    Example:
      lbdeploy eval runs/lbrn-s/best.pt --data mpii:/data/mpii --flip
      lbdeploy eval lbdeploy/data/demo.pt --data synthetic --compare torch,ort,tvm
      lbdeploy eval out/ --data lsp:/data/lsp --json
      lbdeploy eval m.pt --data synthetic --limit 50 --plot pck.png
      lbdeploy eval lbdeploy/data/cpd_demo.pt --data synthetic-saliency --compare torch,ort
      lbdeploy eval cifar.pt --data synthetic-cifar:0,200 --compare torch,ort
    """
    from lbdeploy.data import open_dataset
    from lbdeploy.runtime.tasks import RUNTIME_TASKS, runtime_task

    if plot:
        check_image_file(plot, "--plot")
    dataset = open_dataset(data, split, seed)
    if len(dataset) == 0:
        raise ConfigError(f"{dataset.describe()} is empty; choose another --split")
    record = runtime_task(dataset.task)
    given = {"flip": flip, "threshold": threshold is not None, "norm": norm, "plot": plot}
    unused = [f"--{name}" for name, was_given in given.items() if was_given and name not in record.eval_options]
    if unused:
        owners = sorted({other.task.name for other in RUNTIME_TASKS.values() for name in unused
                         if name[2:] in other.eval_options})
        raise ConfigError(f"{', '.join(unused)}: {'/'.join(owners)} options; {dataset.describe()} is a "
                          f"{record.task.name} dataset (it reports {record.metric})")
    options = {name: value for name, value in (("flip", flip), ("threshold", threshold), ("norm", norm))
               if name in record.eval_options}
    people = len(dataset) if limit is None else min(limit, len(dataset))
    reports, skipped, predictors = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="lbdeploy-eval-") as workdir:
        columns = eval_columns(sources, backend, parse_backends(compare), Path(workdir),
                               progress=lambda message: click.echo(message, err=True))
        for label, path, name in columns:
            try:
                predictors[label] = record.predictor_class(path, backend=name, threads=threads)
            except (BackendUnavailable, KernelLibraryError, ArtifactError) as err:
                if not compare:
                    raise
                skipped[label] = str(err)
        if predictors and people >= ESTIMATE_FROM_PEOPLE:
            timings = {label: record.seconds_per_item(p, dataset, **options) for label, p in predictors.items()}
            if None not in timings.values():
                click.echo(duration_notice(people, timings), err=True)
        for label, predictor in predictors.items():
            reports[label] = record.evaluate(predictor, dataset, limit, progress and not as_json, **options)
    if not reports:
        raise BackendUnavailable("no backend could run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    if plot:
        from lbdeploy.evaluation.plot import write_pck_plot

        click.echo(f"Wrote {write_pck_plot(reports, plot, f'{dataset.name} {dataset.split}')}", err=True)
    flipped = {"flip": flip} if "flip" in record.eval_options else {}
    _print_reports(dataset, reports, skipped, as_json, record.format_reports(reports), flipped,
                   ", flip test" if flip else "")


def _print_reports(dataset, reports: dict, skipped: dict, as_json: bool, table: str, options: dict, note: str = ""):
    """Print `lbdeploy eval` results: JSON, or the dataset line, the table and the skipped columns."""
    if as_json:
        click.echo(json.dumps({"dataset": dataset.describe(), **options,
                               "results": {k: r.to_dict() for k, r in reports.items()},
                               "skipped": skipped}, indent=2))
        return
    click.echo(f"{dataset.describe()}{note}")
    click.echo(table)
    for label, reason in skipped.items():
        click.echo(f"{label}: skipped ({reason})")


def duration_notice(people: int, seconds_per_person: dict) -> str:
    """The expected duration of an evaluation, with a --limit for a quick look when it is long.

    Args:
        people: people to evaluate. seconds_per_person: column label -> measured seconds per person.
    """
    per_person = sum(seconds_per_person.values())
    each = ", ".join(f"{label} {value:.2f} s" for label, value in seconds_per_person.items())
    line = f"Evaluating {people} people: about {format_duration(people * per_person)} ({each} per person)."
    if people * per_person > LONG_EVAL_S:
        quick = max(1, int(QUICK_LOOK_S / per_person))
        line += f" For a quick look, pass --limit {quick} (about {format_duration(quick * per_person)})."
    return line


COMMANDS = [train_command, eval_command]
