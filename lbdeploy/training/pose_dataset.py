"""A torch Dataset of pose training samples: augmented crop -> normalized tensor, heatmap targets, weights.

Augmentation is seeded per sample (seeded_set.SeededTrainingSet), so resumed training is identical.
"""

from __future__ import annotations

import torch

from lbdeploy.data.augment import NO_AUGMENTATION, AugmentConfig, training_sample
from lbdeploy.data.records import PoseDataset
from lbdeploy.training.seeded_set import SeededTrainingSet


class PoseTrainingSet(SeededTrainingSet):
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
        super().__init__(dataset, input_size, mean, std, augment, seed)
        self.stride = int(stride)
        self.sigma = float(sigma)

    def __getitem__(self, index: int):
        pixels, targets, weights = training_sample(self.dataset, int(index), self.input_size, self.stride, self.sigma,
                                                   self.augmentation(index))
        return self.image_tensor(pixels), torch.from_numpy(targets), torch.from_numpy(weights)
