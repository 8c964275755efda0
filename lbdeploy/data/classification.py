"""A synthetic CIFAR-shaped classification set (32x32 RGB, 10 classes) for the classification task.

No photographs: image `index` of a split is drawn from a seeded generator, its class is
`index % classes`, and each class has its own look (a hue and a stripe orientation) under
per-image noise, so a trained network can tell the classes apart and an untrained one scores
about 1 / classes. `lbdeploy eval --data synthetic-cifar[:TRAIN,VAL]` evaluates top-1 and top-5
accuracy on it (lbdeploy.evaluation.classification).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import colorsys

import numpy as np

from lbdeploy.errors import ConfigError

SYNTHETIC_SIZES = {"train": 5000, "val": 500}
IMAGE_SIZE = 32
CLASSES = 10
_SPLIT_SEEDS = {"train": 0, "val": 1}


class ClassificationDataset(ABC):
    """Base of the classification sets: `load(index)` gives the image and its class.

    Attributes:
        task: the task it evaluates ("classification"). name, split: what it is.
    """

    task = "classification"
    name = "classification"

    def __init__(self, split: str):
        self.split = split

    @abstractmethod
    def __len__(self) -> int:
        """Number of images."""
        ...

    @abstractmethod
    def load(self, index: int) -> tuple[np.ndarray, int]:
        """(image [H, W, 3] uint8 RGB, class index) of image `index`."""
        ...

    def describe(self) -> str:
        """One line naming the dataset, split and size."""
        return f"{self.name} {self.split} ({len(self)} images)"


class SyntheticCifar(ClassificationDataset):
    """`size` seeded 32x32 images of `classes` classes (see the module docstring)."""

    name = "synthetic-cifar"

    def __init__(self, split: str, size: int, seed: int = 0, classes: int = CLASSES):
        super().__init__(split)
        if size < 0 or classes < 2:
            raise ConfigError(f"synthetic-cifar needs size >= 0 and classes >= 2, got {size} and {classes}")
        self.size, self.seed, self.classes = int(size), int(seed), int(classes)

    def __len__(self) -> int:
        """Number of images."""
        return self.size

    def load(self, index: int) -> tuple[np.ndarray, int]:
        """(image [32, 32, 3] uint8 RGB, class) of image `index`."""
        if not 0 <= index < self.size:
            raise IndexError(f"image {index} of {self.size}")
        label = index % self.classes
        rng = np.random.default_rng((self.seed, _SPLIT_SEEDS[self.split], index))
        colour = np.array(colorsys.hsv_to_rgb(label / self.classes, 0.8, 0.9), dtype=np.float32) * 255.0
        angle = np.pi * label / self.classes
        y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
        stripes = 0.5 + 0.5 * np.sin((x * np.cos(angle) + y * np.sin(angle)) * 0.8 + rng.uniform(0, 2 * np.pi))
        image = colour * (0.4 + 0.6 * stripes[..., None]) + rng.normal(0.0, 20.0, (IMAGE_SIZE, IMAGE_SIZE, 3))
        return np.clip(image, 0, 255).astype(np.uint8), label
