"""Datasets behind one spec string: pose (`mpii:PATH`, `lsp:PATH`, `synthetic[:TRAIN[,VAL]]`) and
saliency (`saliency:PATH[,VAL_PATH]`, `synthetic-saliency[:TRAIN[,VAL]]`) and classification
(`synthetic-cifar[:TRAIN[,VAL]]`, CIFAR-shaped; lbdeploy.data.classification).

    from lbdeploy.data import open_dataset
    train = open_dataset("synthetic:2000,200", "train", seed=0)
    record = train.record(0); image = train.load_image(record)

Modules: `records` (PoseRecord, PoseDataset), `mpii`, `lsp`, `synthetic` (the datasets), `scenes`
(several synthetic people per image and short clips, for detection and tracking), `augment`
(training crops and augmentation), `heatmaps` (Gaussian targets), `saliency` (image + mask
datasets). To add a dataset, write a PoseDataset (or SaliencyDataset) subclass and add its loader
to DATASETS.
"""

from __future__ import annotations

from pathlib import Path

from lbdeploy.data.records import PoseDataset, PoseRecord
from lbdeploy.errors import ConfigError

SPLITS = ("train", "val")


def _open_mpii(arg: str, split: str, seed: int) -> PoseDataset:
    from lbdeploy.data.mpii import MPIIDataset

    return MPIIDataset(Path(arg), split)


def _open_lsp(arg: str, split: str, seed: int) -> PoseDataset:
    from lbdeploy.data.lsp import LSPDataset

    return LSPDataset(Path(arg), split)


def _synthetic_sizes(arg: str, defaults: dict, name: str) -> dict:
    sizes = dict(defaults)
    if arg:
        try:
            values = [int(v) for v in arg.split(",")]
        except ValueError:
            raise ConfigError(f"{name} sizes must be integers like {name}:2000,200, got {arg!r}") from None
        if len(values) > len(SPLITS) or min(values) < 0:
            raise ConfigError(f"{name}:{arg}: give at most {len(SPLITS)} sizes, none negative "
                              f"(TRAIN,VAL people, like {name}:2000,200)")
        sizes.update(zip(SPLITS, values))
    return sizes


def _open_synthetic(arg: str, split: str, seed: int) -> PoseDataset:
    from lbdeploy.data.synthetic import DEFAULT_SIZES, SyntheticPoses

    return SyntheticPoses(split, size=_synthetic_sizes(arg, DEFAULT_SIZES, "synthetic")[split], seed=seed)


def _open_saliency(arg: str, split: str, seed: int):
    from lbdeploy.data.saliency import SaliencyFolder

    paths = arg.split(",")
    return SaliencyFolder(Path(paths[min(SPLITS.index(split), len(paths) - 1)]), split)


def _open_synthetic_saliency(arg: str, split: str, seed: int):
    from lbdeploy.data.saliency import SYNTHETIC_SIZES, SyntheticSaliency

    sizes = _synthetic_sizes(arg, SYNTHETIC_SIZES, "synthetic-saliency")
    return SyntheticSaliency(split, size=sizes[split], seed=seed)


def _open_synthetic_cifar(arg: str, split: str, seed: int):
    from lbdeploy.data.classification import SYNTHETIC_SIZES, SyntheticCifar

    return SyntheticCifar(split, size=_synthetic_sizes(arg, SYNTHETIC_SIZES, "synthetic-cifar")[split], seed=seed)


DATASETS = {"mpii": _open_mpii, "lsp": _open_lsp, "synthetic": _open_synthetic, "saliency": _open_saliency,
            "synthetic-saliency": _open_synthetic_saliency, "synthetic-cifar": _open_synthetic_cifar}


def open_dataset(spec: str, split: str, seed: int = 0):
    """Open split `split` ("train" or "val") of the dataset named by `spec`.

    Args:
        spec: "mpii:PATH", "lsp:PATH" or "synthetic[:TRAIN_SIZE[,VAL_SIZE]]" (pose, a PoseDataset);
            "saliency:PATH[,VAL_PATH]" (one folder serves both splits unless VAL_PATH is given) or
            "synthetic-saliency[:TRAIN_SIZE[,VAL_SIZE]]" (a SaliencyDataset);
            "synthetic-cifar[:TRAIN_SIZE[,VAL_SIZE]]" (a ClassificationDataset).
        split: "train" or "val".
        seed: seed of generated datasets (ignored by files on disk).
    Raises:
        ConfigError: an unknown dataset, a missing path or a malformed spec;
        InputError: annotation files that cannot be read.
    """
    name, _, arg = spec.partition(":")
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r} in {spec!r}; use mpii:PATH, lsp:PATH, synthetic, "
                          "saliency:PATH, synthetic-saliency or synthetic-cifar")
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    if not name.startswith("synthetic") and not arg:
        raise ConfigError(f"{name} needs a path: --data {name}:/path/to/{name}")
    return DATASETS[name](arg, split, seed)


__all__ = ["open_dataset", "PoseDataset", "PoseRecord", "DATASETS"]
