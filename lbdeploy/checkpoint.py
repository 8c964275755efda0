"""The `model.pt` checkpoint format: save, safe load, and import of pytorch-pose checkpoints.

A checkpoint is a plain dict (so `torch.load(weights_only=True)` reads it and no code runs):

    {"format": "lbdeploy-model", "format_version": 1, "arch": "lbrn-s", "config": {...},
     "state_dict": {...}, "metadata": {"task", "input_size", "mean", "std",
                                       "dataset", "joints", "flip_pairs", "skeleton"}}

Anything else is refused with one line: a pickled nn.Module or other Python objects, a hostile
pickle, a corrupt or truncated file. A bearpaw/pytorch-pose hourglass checkpoint
(`{"state_dict": ...}`, keys possibly prefixed `module.`) is imported as `shn`, or as `lbrn-s`
when every 3x3 conv weight in it is ternary (docs/models.md gives the key mapping). A bare
state_dict of one of our presets (`torch.save(model.state_dict())`) does not say which network it
belongs to: `import_state_dict` (the `lbdeploy import` command) builds it with the preset options.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lbdeploy.errors import CheckpointError, LbdeployError
from lbdeploy.files import replace_file
from lbdeploy.pose.skeletons import joint_set

FORMAT = "lbdeploy-model"
FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
# Upper bounds of a checkpoint's integer config values, checked before a network is built from them
# (a 1 KB file saying feats=400000 would otherwise allocate hundreds of GiB). Each is far above any
# preset of the paper (docs/models.md); a config key not named here is left to the model's builder.
CONFIG_BOUNDS = {"stacks": 64, "modules": 16, "feats": 4096, "mid": 4096, "joints": 256, "cardinality": 256,
                 "width": 1024, "channels": 1024, "classes": 100_000, "blocks_per_stage": 64, "depth": 8,
                 "kernel_size": 15}
MAX_INPUT_SIDE = 4096


@dataclass
class Checkpoint:
    """A loaded model.pt."""

    arch: str
    config: dict
    state_dict: dict
    metadata: dict = field(default_factory=dict)


def default_metadata(config: dict) -> dict:
    """Metadata for a freshly built model: task (pose, saliency or classification), input size,
    normalization and joints."""
    input_size = [int(v) for v in config.get("input_size", (256, 256))]
    if "joints" in config:
        return {"task": "pose", "input_size": input_size, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                "heatmap_stride": 4, **joint_set(config["joints"]).metadata()}
    if "backbone" in config:  # CPD saliency networks: one logit map at input size, sigmoid -> probability
        return {"task": "saliency", "input_size": input_size, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                "output_activation": "sigmoid"}
    return {"task": "classification", "input_size": input_size, "mean": list(CIFAR_MEAN), "std": list(CIFAR_STD),
            "classes": int(config["classes"])}


def _json_config(config: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}


def save_checkpoint(path, model, metadata: dict | None = None) -> Path:
    """Write `model` (built by `build_model`) to `path` atomically.

    Args:
        path: destination file (conventionally model.pt).
        model: a module with a `config` attribute.
        metadata: overrides merged over `default_metadata(model.config)`.
    Returns:
        The written path.
    """
    config = _json_config(getattr(model, "config", None) or {})
    if "arch" not in config:
        raise CheckpointError("the model has no .config; build it with lbdeploy.models.build_model")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": config["arch"],
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": {**default_metadata(config), **(metadata or {})},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return replace_file(path, lambda temporary: torch.save(payload, temporary))


def _looks_like_torch_file(path: Path) -> bool:
    """A zip archive (torch.save) or a pickle stream (legacy torch.save starts with the protocol opcode)."""
    with open(path, "rb") as f:
        head = f.read(2)
    return zipfile.is_zipfile(path) or head[:1] == b"\x80"


def _read(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not _looks_like_torch_file(path) or "weights only load failed" not in str(err).lower():
            raise CheckpointError(f"{path}: corrupt or not a PyTorch checkpoint; re-save or re-download it") from None
        raise CheckpointError(
            f"{path}: refused, it holds pickled Python objects (such as a whole nn.Module or code to run) that "
            f"lbdeploy never unpickles; save a state_dict with lbdeploy.checkpoint.save_checkpoint"
        ) from None
    except Exception as err:  # torch.load raises many types on damaged files; none may escape as a traceback
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(err).__name__}); re-save or re-download it") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(data).__name__}")
    return data


def _side(value, where: str, path) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INPUT_SIDE:
        raise CheckpointError(f"{path}: {where} is {value!r}; it must be an integer in 1..{MAX_INPUT_SIDE}")


def check_config_bounds(ckpt: Checkpoint, path) -> None:
    """Refuse config and metadata values that no network of ours has, before anything is allocated.

    Raises:
        CheckpointError: an integer option beyond CONFIG_BOUNDS, an input size beyond MAX_INPUT_SIDE,
            mean/std that are not 3 finite numbers (std > 0), or joint names that do not match `joints`.
    """
    for key, bound in CONFIG_BOUNDS.items():
        value = ckpt.config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound:
            raise CheckpointError(f"{path}: config {key}={value!r} is outside 1..{bound}; this is not a network "
                                  "lbdeploy builds (re-save the checkpoint)")
    for where, size in (("config input_size", ckpt.config.get("input_size")),
                        ("metadata input_size", ckpt.metadata.get("input_size"))):
        if size is not None:
            if not isinstance(size, (list, tuple)) or len(size) != 2:
                raise CheckpointError(f"{path}: {where} must be (height, width), not {size!r}")
            for value in size:
                _side(value, where, path)
    for key in ("mean", "std"):
        values = ckpt.metadata.get(key)
        if values is None:
            continue
        if (not isinstance(values, (list, tuple)) or len(values) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e6 for v in values)
                or (key == "std" and min(values) <= 0)):
            raise CheckpointError(f"{path}: metadata {key} must be 3 finite numbers{' above 0' if key == 'std' else ''}, "
                                  f"not {str(values)[:60]}")
    names, joints = ckpt.metadata.get("joints"), ckpt.config.get("joints")
    if isinstance(names, (list, tuple)) and isinstance(joints, int) and len(names) != joints:
        raise CheckpointError(f"{path}: metadata names {len(names)} joints but the network has {joints}; "
                              "re-save the checkpoint with matching joint names")


def load_checkpoint(path) -> Checkpoint:
    """Read a model.pt safely (weights only); imports pytorch-pose hourglass checkpoints too.

    Raises:
        CheckpointError: the file is missing, corrupt, holds pickled objects or is of an unknown format.
    """
    path = Path(path)
    data = _read(path)
    if data.get("format") == FORMAT:
        if data.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: format version {data.get('format_version')} is not supported "
                                  f"(this lbdeploy reads version {FORMAT_VERSION}); upgrade lbdeploy")
        missing = [k for k in ("arch", "config", "state_dict") if k not in data]
        if missing:
            raise CheckpointError(f"{path}: checkpoint lacks {missing}")
        if not isinstance(data["config"], dict) or not isinstance(data.get("metadata") or {}, dict):
            raise CheckpointError(f"{path}: the checkpoint's config and metadata must be dicts")
        ckpt = Checkpoint(data["arch"], dict(data["config"]), data["state_dict"], dict(data.get("metadata") or {}))
        check_config_bounds(ckpt, path)
        return ckpt
    if isinstance(data.get("state_dict"), dict):
        return import_pytorch_pose(data["state_dict"], source=str(path))
    if data and all(isinstance(v, torch.Tensor) and "." in str(k) for k, v in data.items()):  # "layer.weight"
        raise CheckpointError(f"{path}: a bare state_dict, which does not say which network it is; convert it with "
                              f"`lbdeploy import {path} ARCH [--stacks N ...] -o model.pt` using the preset and "
                              "options the network was built with (docs/models.md)")
    raise CheckpointError(f"{path}: not an lbdeploy model.pt nor a pytorch-pose checkpoint (keys: {sorted(data)[:6]})")


def load_model(path):
    """Load a checkpoint and rebuild its network with the saved weights.

    Returns:
        (model in eval mode, Checkpoint)
    Raises:
        CheckpointError / TernaryWeightError: unreadable file, unknown arch, mismatching or non-ternary weights.
    """
    from lbdeploy.models import build_model

    ckpt = load_checkpoint(path)
    try:
        model = build_model(ckpt.arch, **ckpt.config)
        model.load_state_dict(ckpt.state_dict, strict=True)
    except LbdeployError:
        raise
    except (RuntimeError, TypeError, KeyError) as err:
        detail = str(err).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not fit {ckpt.arch} ({detail[0][:200] if detail else err})") from None
    return model.eval(), ckpt


def import_state_dict(path, arch: str, **overrides):
    """Build preset `arch` with `overrides` and load a bare state_dict saved from such a network.

    Args:
        path: a file written by `torch.save(model.state_dict(), path)` (also accepted: the same
            dict wrapped as {"state_dict": ...}, keys possibly prefixed `module.`). Read weights-only.
        arch, overrides: the preset and the options the network was built with (as `build_model`).
    Returns:
        The model in eval mode, ready for `save_checkpoint`.
    Raises:
        CheckpointError: unreadable file, already a model.pt, or weights that do not fit the network
            (the message lists missing, unexpected and misshapen keys).
        ConfigError: unknown preset or option.
    """
    from lbdeploy.models import build_model

    path = Path(path)
    data = _read(path)
    if data.get("format") == FORMAT:
        raise CheckpointError(f"{path} is already an lbdeploy model.pt; use it as it is (no import needed)")
    state_dict = data["state_dict"] if isinstance(data.get("state_dict"), dict) else data
    state_dict = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    if not state_dict or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path}: not a state_dict (expected a dict of tensors, as torch.save(model.state_dict()) "
                              "writes)")
    model = build_model(arch, **overrides)
    expected = model.state_dict()
    problems = _mismatches(expected, state_dict)
    if problems:
        given = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the preset's defaults"
        raise CheckpointError(f"{path}: the weights do not fit {arch} built with {given}: {'; '.join(problems)}; pass "
                              "the preset and options the network was built with (--stacks, --feats, --modules, "
                              "--joints, --input-size, ...; `lbdeploy models` lists the presets)")
    if "density" not in overrides:
        density = _file_density(model, state_dict)
        if density is not None and density != model.config.get("density"):
            model = build_model(arch, **overrides, density=density)
    _check_ternary_draw(model, state_dict, path)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _ternary_layers(model) -> list:
    from lbdeploy.models.ternary import TernaryConv2d

    return [(name, module) for name, module in model.named_modules() if isinstance(module, TernaryConv2d)]


def _nonzeros(density: float, count: int) -> int:
    return int(density * count + 0.5)  # as draw_ternary: exactly round(density * n) non-zeros


def _file_density(model, state_dict: dict) -> float | None:
    """The density the file's ternary weights were drawn at (each layer has round(density * n) non-zeros):
    the shortest decimal that gives every layer's count, else None (no ternary layer, or no such value)."""
    counts = [(int(torch.count_nonzero(state_dict[f"{name}.weight"])), state_dict[f"{name}.weight"].numel())
              for name, _ in _ternary_layers(model)]
    if not counts:
        return None
    fraction = sum(c for c, _ in counts) / sum(n for _, n in counts)
    for digits in range(1, 7):
        candidate = round(fraction, digits)
        if all(_nonzeros(candidate, n) == c for c, n in counts):
            return candidate
    return None


def _check_ternary_draw(model, state_dict: dict, path: Path) -> None:
    """The file's ternary weights must be the seeded draw that the model's config records (seed, density).

    Raises:
        CheckpointError: they are not; the message says which option to pass.
    """
    layers = _ternary_layers(model)
    seed, density = model.config.get("seed"), model.config.get("density")
    wrong_density = [name for name, module in layers
                     if int(torch.count_nonzero(state_dict[f"{name}.weight"])) != _nonzeros(module.density, module.weight.numel())]
    if wrong_density:
        raise CheckpointError(f"{path}: the ternary weights do not have density {density} ({len(wrong_density)} of "
                              f"{len(layers)} layers differ, e.g. {wrong_density[0]}); pass the --density they were "
                              "drawn with, or leave it out to take it from the file")
    differ = [name for name, module in layers if not torch.equal(module.weight, state_dict[f"{name}.weight"].to(module.weight.dtype))]
    if differ:
        raise CheckpointError(f"{path}: the ternary weights are not the draw of seed {seed} at density {density} "
                              f"({len(differ)} of {len(layers)} layers differ, e.g. {differ[0]}); pass the --seed they "
                              "were drawn with (a model.pt records it in its config)")


def _mismatches(expected: dict, given: dict) -> list[str]:
    """Human-readable differences between two state_dicts' keys and shapes (empty when they fit)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    misshapen = [k for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if misshapen:
        key = misshapen[0]
        problems.append(f"{len(misshapen)} keys of another shape (e.g. {key}: {list(given[key].shape)} in the file, "
                        f"{list(expected[key].shape)} in the network)")
    return problems


# --- pytorch-pose import -------------------------------------------------------------------------

_HG_CONV2 = re.compile(r"^(hg|res|layer\d)\..*\.conv2\.weight$")


def import_pytorch_pose(state_dict: dict, source: str = "checkpoint") -> Checkpoint:
    """Convert a bearpaw/pytorch-pose HourglassNet state_dict into an lbdeploy Checkpoint.

    Keys map one to one once a `module.` prefix is stripped (our parameter names follow that
    codebase). When every 3x3 conv2 weight is ternary the model becomes `lbrn-s`: conv2 weights
    become int8 buffers and each conv2 bias is folded into the following BatchNorm's running mean.
    """
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    if "score.0.weight" not in sd or "conv1.weight" not in sd:
        raise CheckpointError(f"{source}: not a stacked-hourglass state_dict (no score.0.weight / conv1.weight)")
    stacks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("score."))
    joints, feats = sd["score.0.weight"].shape[:2]
    modules = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("res.0."))
    spatial = [k for k in sd if _HG_CONV2.match(k)]
    ternary = bool(spatial) and all(
        sd[k].dim() == 4 and sd[k].shape[-1] > 1 and bool(torch.isin(sd[k], torch.tensor([-1.0, 0.0, 1.0])).all())
        for k in spatial
    )
    if ternary:
        for key in spatial:
            prefix = key[: -len("conv2.weight")]
            bias = sd.pop(prefix + "conv2.bias", None)
            if bias is not None:
                sd[prefix + "bn3.running_mean"] = sd[prefix + "bn3.running_mean"] - bias
            sd[key] = sd[key].to(torch.int8)
    arch = "lbrn-s" if ternary else "shn"
    nonzero = sum(int((sd[k] != 0).sum()) for k in spatial) if ternary else 0
    total = sum(sd[k].numel() for k in spatial)
    density = round(nonzero / total, 4) if ternary and total else 0.5
    input_size = [256, 256]
    config = {"arch": arch, "stacks": stacks, "modules": modules, "feats": int(feats), "mid": None,
              "joints": int(joints), "input_size": input_size, "block": "lbb" if ternary else "dense",
              "pyramid": False, "cardinality": 4, "pool": "fractional", "density": density, "seed": 0,
              "kernel_size": 3, "act": "relu", "depth": 4}
    metadata = {**default_metadata(config), "imported_from": "pytorch-pose"}
    return Checkpoint(arch, config, sd, metadata)
