"""A torch Dataset of training samples: augmented crop -> normalized tensor, heatmap targets, weights.

The augmentation of sample i in epoch e is drawn from numpy's generator seeded with
(seed, e, i), so a sample is the same whatever the worker count, the worker that loads it, or
whether the run was resumed: this is what makes resumed training identical.
"""

from __future__ import annotations

import numpy as np
import torch

from lbdeploy.data.augment import NO_AUGMENTATION, AugmentConfig, draw_augmentation, training_sample
from lbdeploy.data.records import PoseDataset


class PoseTrainingSet(torch.utils.data.Dataset):
    """Training samples of a pose dataset.

    Args:
        dataset: the records and images (lbdeploy.data).
        input_size: model input (width, height).
        stride: input pixels per heatmap pixel.
        sigma: Gaussian sigma in heatmap pixels.
        mean, std: input normalization (RGB, after scaling pixels to [0, 1]).
        augment: augmentation ranges (NO_AUGMENTATION for plain crops).
        seed: base seed of the per-sample augmentation.
    """

    def __init__(self, dataset: PoseDataset, input_size, stride: int, sigma: float, mean, std,
                 augment: AugmentConfig = NO_AUGMENTATION, seed: int = 0):
        self.dataset = dataset
        self.input_size = tuple(input_size)
        self.stride = int(stride)
        self.sigma = float(sigma)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations are drawn (call before iterating)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        aug = draw_augmentation(rng, self.augment)
        pixels, targets, weights = training_sample(self.dataset, int(index), self.input_size, self.stride, self.sigma, aug)
        image = (pixels.astype(np.float32) / 255.0 - self.mean) / self.std
        return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                torch.from_numpy(targets), torch.from_numpy(weights))
