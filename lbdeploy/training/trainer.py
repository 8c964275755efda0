"""The training loop of `lbdeploy train`: the paper's recipe, checkpoints, resume, DDP.

Recipe (Liu et al. 2021, after Newell et al.): RMSprop at 2.5e-4, divided by 10 at the epochs of
`lr_drops`; MSE between every stack's heatmaps and Gaussian targets (intermediate supervision);
random scale +-25 %, rotation +-30 degrees, horizontal flip and colour jitter. The 3x3 ternary
weights are buffers, never optimized; at the end of training they are compared bit for bit with
the weights their seed draws, and a difference is an error. The task-specific parts (model
check, samples, loss, validation metric) come from lbdeploy.training.tasks, chosen by the dataset:
saliency datasets train CPD presets with CPD's BCE on both decoder maps, validated by max-F.

Outputs in the run folder:
    last.pt     model.pt of the latest epoch (lbdeploy checkpoint format, exportable)
    best.pt     model.pt of the epoch with the best validation PCK (saliency: max-F)
    state.pt    optimizer, scheduler, RNG state, epoch and history (what --resume reads)
    log.jsonl   one JSON line per epoch (loss, learning rate, PCK, images/s, seconds)

Determinism: the seed fixes the real-valued initialization, the ternary draw, the shuffling
(a generator seeded per epoch) and every augmentation (seeded per sample, see pose_dataset), so
a run is reproducible on the same machine and thread count, and `resume` continues exactly as an
uninterrupted run would. Multi-GPU: launch with torchrun; with WORLD_SIZE > 1 the process group
is initialized (NCCL on GPUs, Gloo otherwise), each rank reads a DistributedSampler shard, the
model is wrapped in DistributedDataParallel and rank 0 validates and writes the files.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from lbdeploy.data import open_dataset
from lbdeploy.data.augment import AugmentConfig
from lbdeploy.errors import ConfigError, TernaryWeightError
from lbdeploy.files import replace_file
from lbdeploy.training.schedule import make_optimizer, make_scheduler
from lbdeploy.training.tasks import task_for

STATE_FORMAT = "lbdeploy-train-state"
# Options that must not change between a run and its resumption.
RESUME_KEYS = ("arch", "data", "model_options", "seed", "batch_size", "lr", "lr_drops", "sigma", "augment")


@dataclass
class TrainConfig:
    """Everything `train` needs; `lbdeploy train` fills it from its options.

    Attributes:
        output: run folder. arch: model preset. data: dataset spec (lbdeploy.data.open_dataset).
        model_options: build_model overrides (stacks, modules, feats, density, input_size, ...).
        seed: model seed (ternary draw, initialization) and training seed (shuffle, augmentation).
        epochs, batch_size (per process), lr, lr_drops: the schedule.
        workers: DataLoader worker processes. sigma: target sigma in heatmap pixels (None: scaled
        from 1 at 64x64). augment: augmentation ranges. val_limit: validate on at most this many
        people (None: the whole split). threads: torch CPU threads (None: torch's default).
        progress: show a tqdm bar. resume: continue the run in `output`.
        init: a model.pt whose weights the new run starts from (fine-tuning; its config must be the
            one this run builds, ternary weights included).
    """

    output: str
    arch: str = "lbrn-s"
    data: str = "synthetic"
    model_options: dict = field(default_factory=dict)
    seed: int = 0
    epochs: int = 250
    batch_size: int = 6
    lr: float = 2.5e-4
    lr_drops: tuple = (150, 170, 200)
    workers: int = 2
    sigma: float | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    val_limit: int | None = None
    threads: int | None = None
    progress: bool = True
    resume: bool = False
    init: str | None = None

    def resume_view(self) -> dict:
        """The options a resumed run must share with the original one (JSON-friendly)."""
        data = asdict(self)
        data["lr_drops"] = list(self.lr_drops)
        data["model_options"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.model_options.items()}
        return {k: data[k] for k in RESUME_KEYS}


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    last: Path
    best: Path
    best_pck: float | None  # the best validation score: PCK for pose, max-F for saliency
    history: list


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def _start_from(model: torch.nn.Module, init: str) -> None:
    """Load the weights of the model.pt `init` into `model` (a new run fine-tuning a trained model).

    Raises:
        ConfigError: `init` was built with another architecture or config (the differences named).
    """
    from lbdeploy.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(init)
    built = json.loads(json.dumps(model.config))
    given = json.loads(json.dumps(checkpoint.config))
    different = sorted(key for key in set(built) | set(given) if built.get(key) != given.get(key))
    if different or checkpoint.arch != model.config.get("arch", checkpoint.arch):
        raise ConfigError(f"--init {init} was built with other options ({', '.join(different) or 'arch'}: "
                          f"{ {k: given.get(k) for k in different} }); pass the same model options and --seed")
    model.load_state_dict(checkpoint.state_dict)


def _setup_distributed() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return _Dist(device=torch.device("cuda" if cuda else "cpu"))
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    return _Dist(dist.get_rank(), world, torch.device(f"cuda:{local_rank}" if cuda else "cpu"))


def ternary_buffers(model: torch.nn.Module) -> dict:
    """Name -> int8 weight tensor of every TernaryConv2d in `model`."""
    from lbdeploy.models.ternary import TernaryConv2d

    return {name: m.weight.detach().cpu().clone() for name, m in model.named_modules() if isinstance(m, TernaryConv2d)}


def verify_ternary_unchanged(model: torch.nn.Module) -> int:
    """Check that every ternary weight equals what the model's config (seed, density) draws.

    Returns:
        The number of ternary layers checked.
    Raises:
        TernaryWeightError: a layer whose weights changed.
    """
    from lbdeploy.models import build_model

    expected = ternary_buffers(build_model(model.config["arch"], **model.config))
    actual = ternary_buffers(model)
    changed = [name for name in expected if name not in actual or not torch.equal(expected[name], actual[name])]
    if changed or set(actual) != set(expected):
        raise TernaryWeightError(
            f"{len(changed)} ternary layer(s) differ from their seeded draw after training (first: {changed[:3]}); "
            "the fixed 3x3 weights must never change: check for code that writes to TernaryConv2d buffers"
        )
    return len(expected)


def _sum_over_ranks(total: float, seen: int, dist: _Dist) -> tuple[float, int]:
    """Loss sum and image count of the epoch over all processes (unchanged in a single process)."""
    if dist.world == 1:
        return total, seen
    sums = torch.tensor([total, float(seen)], dtype=torch.float64, device=dist.device)
    torch.distributed.all_reduce(sums)
    return float(sums[0]), int(sums[1])


def _write_json_line(path: Path, entry: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def _save_state(path: Path, payload: dict) -> None:
    replace_file(path, lambda temporary: torch.save(payload, temporary))


def _load_state(run: Path, config: TrainConfig) -> dict:
    path = run / "state.pt"
    if not path.is_file() or not (run / "last.pt").is_file():
        raise ConfigError(f"--resume: {run} has no state.pt/last.pt; start a new run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors for a corrupt file
        raise ConfigError(f"--resume: {path} is not readable as a training state ({type(err).__name__}); "
                          "start a new run without --resume") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or not isinstance(state.get("config"), dict):
        raise ConfigError(f"{path} is not an lbdeploy training state; start a new run without --resume")
    saved, now = state["config"], json.loads(json.dumps(config.resume_view()))
    different = sorted(k for k in RESUME_KEYS if saved.get(k) != now.get(k))
    if different:
        raise ConfigError(f"--resume: options {different} differ from the run in {run} "
                          f"(was {[saved.get(k) for k in different]}); pass the original options")
    return state


def _loader(train_set: torch.utils.data.Dataset, config: TrainConfig, dist: _Dist, epoch: int):
    train_set.set_epoch(epoch)
    if dist.world > 1:
        sampler = torch.utils.data.DistributedSampler(train_set, dist.world, dist.rank, shuffle=True, seed=config.seed)
        sampler.set_epoch(epoch)
    else:
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        sampler = torch.utils.data.RandomSampler(train_set, generator=generator)
    return torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, drop_last=True,
                                       num_workers=config.workers, persistent_workers=False,
                                       pin_memory=dist.device.type == "cuda")


LONG_RUN_S = 3600.0  # above this, the estimate says how to shorten the run


def duration_estimate(net, task, train_set, config: TrainConfig, dist, epochs: int) -> str:
    """One line with the expected training time, from one timed batch (its samples and a forward and
    backward pass) before the first epoch, as `lbdeploy eval` estimates before evaluating.

    The timed pass runs in eval mode and no optimizer steps, so BatchNorm statistics, weights and
    the random streams are left as they were (runs stay bit-identical with and without it).
    """
    from torch.utils.data import default_collate

    from lbdeploy.durations import format_duration

    started = time.perf_counter()
    images, *targets = (t.to(dist.device) for t in default_collate([train_set[i] for i in range(config.batch_size)]))
    was_training = net.training
    net.eval()
    try:
        task.loss(net(images), *targets).backward()
    finally:
        net.zero_grad(set_to_none=True)
        net.train(was_training)
    batches = -(-len(train_set) // (config.batch_size * dist.world))
    per_epoch = (time.perf_counter() - started) * batches
    line = (f"About {format_duration(per_epoch)} per epoch ({batches:,} batches of {config.batch_size}), "
            f"{format_duration(per_epoch * epochs)} for {epochs} epoch{'s' if epochs != 1 else ''} on this machine, "
            "validation not included (from one timed batch).")
    if per_epoch * epochs > LONG_RUN_S:
        line += " To shorten it: fewer --epochs, a smaller model (--stacks, --feats) or less data."
    return line


def train(config: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Train a pose or saliency network with `config`; see the module docstring for what is written.

    Raises:
        ConfigError: bad options, an existing run without --resume, a dataset smaller than a batch.
        TernaryWeightError: ternary weights that changed during training.
    """
    from tqdm import tqdm

    from lbdeploy.checkpoint import default_metadata, load_checkpoint, save_checkpoint

    if config.epochs < 1 or config.batch_size < 1 or config.workers < 0:
        raise ConfigError("--epochs and --batch-size must be >= 1 and --workers >= 0")
    if config.threads:
        torch.set_num_threads(int(config.threads))
    dist = _setup_distributed()
    run = Path(config.output)
    if not config.resume and (run / "last.pt").exists():
        raise ConfigError(f"{run} already holds a run; pass --resume to continue it or choose another -o")
    train_data = open_dataset(config.data, "train", config.seed)
    val_data = open_dataset(config.data, "val", config.seed)
    task = task_for(config, train_data)
    model = task.build()
    height, width = (int(v) for v in model.config["input_size"])
    metadata = default_metadata(model.config)
    train_set = task.training_set(metadata, (width, height))
    if len(train_set) < config.batch_size * dist.world:
        raise ConfigError(f"{train_data.describe()} is smaller than one batch of {config.batch_size}; lower --batch-size")

    if config.init:
        _start_from(model, config.init)
    optimizer = make_optimizer(model, config.lr)
    scheduler = make_scheduler(optimizer, tuple(config.lr_drops))
    start_epoch, history, best_pck = 0, [], None
    if config.resume:
        state = _load_state(run, config)
        try:
            model.load_state_dict(load_checkpoint(run / "last.pt").state_dict)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            start_epoch, history, best_pck = int(state["epoch"]), list(state["history"]), state["best_pck"]
        except (KeyError, ValueError, TypeError, RuntimeError) as err:  # a state of another shape
            raise ConfigError(f"--resume: {run / 'state.pt'} does not fit this model and optimizer "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); start a new run") from None
        if start_epoch >= config.epochs:
            raise ConfigError(f"{run} already finished {start_epoch} epochs; raise --epochs to train further")
    model.to(dist.device)
    net = model
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    if dist.main:
        run.mkdir(parents=True, exist_ok=True)
        log(f"Training {config.arch} ({sum(p.numel() for p in model.parameters()):,} trainable parameters) on "
            f"{train_data.describe()}, validating on {val_data.describe()}, input {width}x{height}{task.describe()}, "
            f"{dist.world} process(es) on {dist.device}")

        log(duration_estimate(model, task, train_set, config, dist, config.epochs - start_epoch))  # no DDP collectives on one rank

    for epoch in range(start_epoch, config.epochs):
        net.train()
        started = time.perf_counter()
        total, seen, steps = 0.0, 0, 0
        bar = tqdm(_loader(train_set, config, dist, epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not (config.progress and dist.main), leave=False, unit="batch")
        for images, *targets in bar:
            images, *targets = (t.to(dist.device, non_blocking=True) for t in (images, *targets))
            loss = task.loss(net(images), *targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(images)
            seen += len(images)
            steps += 1
            rate = seen * dist.world / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{total / seen:.3e}", img_s=f"{rate:.1f}")
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        total, seen = _sum_over_ranks(total, seen, dist)
        seconds = time.perf_counter() - started
        entry = {"epoch": epoch + 1, "loss": total / max(seen, 1), "lr": lr, "steps": steps,
                 "images_per_s": round(seen / seconds, 2), "seconds": round(seconds, 2), task.metric: None}
        if dist.main:
            figures = task.validate(model, val_data, metadata, (width, height)) if len(val_data) else {task.metric: None}
            entry.update(figures)
            history.append(entry)
            score = entry[task.metric]
            training_meta = {"training": {"data": config.data, "epoch": epoch + 1,
                                          **{f"val_{k}": v for k, v in figures.items()},
                                          "metric": task.metric_name(val_data)}}
            save_checkpoint(run / "last.pt", model, {**metadata, **training_meta})
            improved = score is not None and (best_pck is None or score > best_pck)
            if improved or not (run / "best.pt").exists():
                best_pck = score if score is not None else best_pck
                shutil.copyfile(run / "last.pt", run / "best.pt")
            _save_state(run / "state.pt", {
                "format": STATE_FORMAT, "epoch": epoch + 1, "config": config.resume_view(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(), "history": history, "best_pck": best_pck})
            _write_json_line(run / "log.jsonl", entry)
            log(f"epoch {epoch + 1}/{config.epochs}: loss {entry['loss']:.4e}, lr {lr:.2e}, "
                f"{task.score_text(val_data, entry)}, {entry['images_per_s']} img/s, {seconds:.0f} s")

    layers = verify_ternary_unchanged(model.cpu())
    if dist.main:
        log(f"Ternary weights of {layers} layers are bit-identical to their seeded draw. "
            f"Best validation {task.metric} {best_pck if best_pck is not None else 'n/a'}; wrote {run / 'best.pt'} and {run / 'last.pt'}")
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    return TrainResult(run, run / "last.pt", run / "best.pt", best_pck, history)
