"""The common shape of every pose dataset: one `PoseRecord` per annotated person.

A dataset (MPII, LSP, the synthetic set) is a `PoseDataset`: it knows its joint set, how many
records a split has, each record's annotation and how to load the record's image. Training crops,
augmentation and evaluation only see records, so a new dataset is one new subclass that fills
`records` (or overrides `record`) and `load_image`, plus an entry in `lbdeploy.data.DATASETS`.

Coordinates are 0-based pixel indices of the original image (pixel (0, 0) has its centre at
(0, 0)); `scale` follows the stacked-hourglass convention: the crop around `center` is
`200 * scale` pixels high (see lbdeploy.pose.affine).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

import numpy as np

from lbdeploy.pose.skeletons import JointSet


@dataclass(frozen=True)
class PoseRecord:
    """One annotated person.

    Attributes:
        image: what `PoseDataset.load_image` reads (a file path, or an index for generated data).
        joints: [J, 2] float64 (x, y) in image pixels.
        visible: [J] bool, True where the joint is annotated (used by the loss and by PCK).
        center: [2] crop centre in image pixels.
        scale: crop height / 200 pixels.
        head_box: (x1, y1, x2, y2) head rectangle for PCKh, or None.
    """

    image: object
    joints: np.ndarray
    visible: np.ndarray
    center: np.ndarray
    scale: float
    head_box: Optional[tuple] = None


class PoseDataset(ABC):
    """Base class of the pose datasets: a list of records and an image loader.

    Subclasses set `name`, `joint_set`, `metric` ("pckh" or "pck"), `threshold` (the paper's PCK
    threshold for this dataset), `norm` ("head" or "torso", see lbdeploy.evaluation.pck) and fill
    `self.records`; they implement `load_image`.
    """

    task = "pose"
    name = "dataset"
    joint_set: JointSet
    metric = "pckh"
    threshold = 0.5
    norm = "head"

    def __init__(self, split: str):
        self.split = split
        self.records: list[PoseRecord] = []

    def __len__(self) -> int:
        return len(self.records)

    def record(self, index: int) -> PoseRecord:
        """The annotation of person `index` of this split."""
        return self.records[index]

    @abstractmethod
    def load_image(self, record: PoseRecord) -> np.ndarray:
        """The record's image as an HxWx3 uint8 RGB array."""

    def describe(self) -> str:
        """One line naming the dataset, split and size."""
        return f"{self.name} {self.split} ({len(self)} people, {len(self.joint_set.joints)} joints)"
