"""A torch Dataset of saliency training samples: resized, augmented image -> normalized tensor, mask.

The whole image is resized to the model input (saliency uses no crop); augmentation is a
horizontal flip (p = 0.5, image and mask together) and the pose recipe's per-channel colour gains.
As for pose (pose_dataset), sample i of epoch e draws its augmentation from numpy's generator
seeded with (seed, e, i), so runs are reproducible and resumable whatever the worker count.
"""

from __future__ import annotations

import numpy as np
import torch

from lbdeploy.data.augment import NO_AUGMENTATION, AugmentConfig, draw_augmentation
from lbdeploy.data.saliency import SaliencyDataset, resize_image, resize_mask


def normalize(pixels: np.ndarray, mean, std) -> np.ndarray:
    """[..., H, W, 3] uint8 -> [..., 3, H, W] float32, scaled to [0, 1] then (x - mean) / std."""
    image = (pixels.astype(np.float32) / 255.0 - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis(image, -1, -3))


class SaliencyTrainingSet(torch.utils.data.Dataset):
    """Training samples of a saliency dataset: (image [3, H, W], mask [1, H, W] float 0/1).

    Args:
        dataset: images and masks (lbdeploy.data.saliency).
        input_size: model input (width, height).
        mean, std: input normalization (RGB, after scaling pixels to [0, 1]).
        augment: flip and colour-gain ranges (scale and rotation are not used).
        seed: base seed of the per-sample augmentation.
    """

    def __init__(self, dataset: SaliencyDataset, input_size, mean, std, augment: AugmentConfig = NO_AUGMENTATION,
                 seed: int = 0):
        self.dataset = dataset
        self.input_size = tuple(input_size)
        self.mean, self.std = mean, std
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations are drawn (call before iterating)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        aug = draw_augmentation(np.random.default_rng([self.seed, self.epoch, int(index)]), self.augment)
        image, mask = self.dataset.load(int(index))
        pixels, mask = resize_image(image, self.input_size), resize_mask(mask, self.input_size)
        if aug.flip:
            pixels, mask = pixels[:, ::-1], mask[:, ::-1]
        if aug.gains != (1.0, 1.0, 1.0):
            pixels = np.clip(pixels.astype(np.float32) * np.asarray(aug.gains, dtype=np.float32), 0, 255).astype(np.uint8)
        target = np.ascontiguousarray(mask, dtype=np.float32)[None]
        return torch.from_numpy(normalize(pixels, self.mean, self.std)), torch.from_numpy(target)
