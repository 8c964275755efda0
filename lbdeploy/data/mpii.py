"""MPII Human Pose in its widespread JSON annotation layouts.

PATH is the dataset folder; images are read from PATH/images. Annotations are searched in order:

1. Per-split files, as distributed with HRNet / mmpose: `annot/train.json` and `annot/valid.json`
   (or the same names directly in PATH): a list of
   `{"image": "015601864.jpg", "joints": [[x, y]] * 16, "joints_vis": [0/1] * 16,
     "center": [x, y], "scale": s, "headbox": [[x1, y1], [x2, y2]]}`.
2. One file with a validation flag, as in pytorch-pose: `mpii_annotations.json` (or
   `annot/mpii_annotations.json`): a list of `{"img_paths", "joint_self": [[x, y, vis]] * 16,
   "objpos": [x, y], "scale_provided": s, "isValidation": 0/1}`.

A head box may be given as "headbox", "head_box" or "head_rect", either [[x1, y1], [x2, y2]] or
[x1, y1, x2, y2]; PCKh uses 0.6 x its diagonal. Without one, the head segment (head_top - neck)
stands in (lbdeploy.evaluation.pck), which is close to but not the official MPII number.

Conventions applied, as in the reference loaders: coordinates are MATLAB 1-based and are shifted
to 0-based; a joint is annotated when its coordinates are positive (and "joints_vis" is 1 where
given); the person box is moved down by 15 x scale pixels and enlarged by 1.25.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lbdeploy.data.records import PoseDataset, PoseRecord
from lbdeploy.errors import ConfigError, InputError
from lbdeploy.pose.skeletons import MPII
from lbdeploy.transforms import load_image

SPLIT_FILES = {"train": ("train.json",), "val": ("valid.json", "val.json")}
COMBINED_FILE = "mpii_annotations.json"
CENTER_SHIFT = 15.0  # pixels per unit of scale, downward
SCALE_PADDING = 1.25
HEAD_BOX_KEYS = ("headbox", "head_box", "head_rect")


def _find_annotations(root: Path, split: str) -> tuple[Path, bool]:
    """(annotation file, whether it is the combined file that needs filtering by isValidation)."""
    for folder in (root / "annot", root):
        for name in SPLIT_FILES[split]:
            if (folder / name).is_file():
                return folder / name, False
    for folder in (root / "annot", root):
        if (folder / COMBINED_FILE).is_file():
            return folder / COMBINED_FILE, True
    raise ConfigError(f"no MPII annotations in {root}: expected annot/{SPLIT_FILES[split][0]} or {COMBINED_FILE}")


def _head_box(entry: dict):
    for key in HEAD_BOX_KEYS:
        if entry.get(key) is not None:
            values = np.asarray(entry[key], dtype=np.float64).reshape(-1)
            if values.size != 4:
                raise InputError(f"{key} must hold 4 numbers, got {entry[key]!r}")
            return tuple(float(v) - 1.0 for v in values)
    return None


def parse_entry(entry: dict, where: str = "annotation") -> tuple[PoseRecord, bool | None]:
    """One JSON entry -> (PoseRecord, isValidation or None when the layout has no such flag).

    Raises:
        InputError: missing or malformed fields.
    """
    try:
        if "joint_self" in entry:
            raw = np.asarray(entry["joint_self"], dtype=np.float64)
            joints, flags = raw[:, :2], np.ones(len(raw), dtype=bool)
            image, center, scale = entry["img_paths"], entry["objpos"], entry["scale_provided"]
        else:
            joints = np.asarray(entry["joints"], dtype=np.float64)
            flags = np.asarray(entry.get("joints_vis", np.ones(len(joints))), dtype=np.float64) > 0
            image, center, scale = entry["image"], entry["center"], entry["scale"]
        center = np.asarray(center, dtype=np.float64).reshape(2)
        scale = float(scale)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise InputError(f"{where}: not an MPII entry ({type(err).__name__}: {err}); see docs/training.md") from None
    if joints.shape != (16, 2):
        raise InputError(f"{where}: expected 16 joints [x, y], got shape {joints.shape}")
    if not scale > 0:
        raise InputError(f"{where}: scale must be > 0, got {scale}")
    visible = flags & (joints[:, 0] > 0) & (joints[:, 1] > 0)
    center = center - 1.0
    center[1] += CENTER_SHIFT * scale
    record = PoseRecord(image=str(image), joints=joints - 1.0, visible=visible, center=center,
                        scale=scale * SCALE_PADDING, head_box=_head_box(entry))
    flag = entry.get("isValidation")
    return record, (None if flag is None else bool(flag))


class MPIIDataset(PoseDataset):
    """MPII people of one split (see the module docstring for the layouts).

    Args:
        root: dataset folder holding images/ and the annotation JSON.
        split: "train" or "val".
    Raises:
        ConfigError: no annotation file; InputError: unreadable or malformed annotations.
    """

    name = "mpii"
    joint_set = MPII
    metric = "pckh"
    threshold = 0.5
    norm = "head"

    def __init__(self, root: Path, split: str):
        super().__init__(split)
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"MPII folder {self.root} does not exist")
        path, combined = _find_annotations(self.root, split)
        try:
            entries = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"{path} is not readable JSON ({err})") from None
        if not isinstance(entries, list):
            raise InputError(f"{path} must hold a JSON list of people")
        for i, entry in enumerate(entries):
            record, is_val = parse_entry(entry, f"{path} entry {i}")
            if combined and is_val is None:
                raise InputError(f"{path} entry {i} has no isValidation flag; use annot/train.json + annot/valid.json")
            if not combined or is_val == (split == "val"):
                self.records.append(record)

    def load_image(self, record: PoseRecord) -> np.ndarray:
        """Read images/<record.image> as HxWx3 uint8 RGB."""
        return load_image(str(self.root / "images" / record.image))
