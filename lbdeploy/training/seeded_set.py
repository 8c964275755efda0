"""The base of the training sets: reproducible per-sample augmentation.

The augmentation of sample i in epoch e is drawn from numpy's generator seeded with
(seed, e, i), so a sample is the same whatever the worker count, the worker that loads it, or
whether the run was resumed: this is what makes resumed training identical. Subclasses
(pose_dataset, saliency_dataset) build the sample from `augmentation(index)`.
"""

from __future__ import annotations

import numpy as np
import torch

from lbdeploy.data.augment import NO_AUGMENTATION, AugmentConfig, draw_augmentation
from lbdeploy.transforms import normalize


class SeededTrainingSet(torch.utils.data.Dataset):
    """A dataset's training samples with seeded augmentation.

    Args:
        dataset: the source dataset (lbdeploy.data), with `len()`.
        input_size: model input (width, height).
        mean, std: input normalization (RGB, after scaling pixels to [0, 1]).
        augment: augmentation ranges (NO_AUGMENTATION for plain samples).
        seed: base seed of the per-sample augmentation.
    """

    def __init__(self, dataset, input_size, mean, std, augment: AugmentConfig = NO_AUGMENTATION, seed: int = 0):
        self.dataset = dataset
        self.input_size = tuple(input_size)
        self.input_spec = {"pixel_scale": 1.0 / 255.0, "mean": list(mean), "std": list(std)}
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations are drawn (call before iterating)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def augmentation(self, index: int):
        """The augmentation of sample `index` in the current epoch."""
        return draw_augmentation(np.random.default_rng([self.seed, self.epoch, int(index)]), self.augment)

    def image_tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """[H, W, 3] uint8 RGB -> normalized [3, H, W] float32 tensor (the runtime's preprocessing)."""
        return torch.from_numpy(normalize(pixels, self.input_spec))
