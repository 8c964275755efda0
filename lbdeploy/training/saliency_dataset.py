"""A torch Dataset of saliency training samples: resized, augmented image -> normalized tensor, mask.

The whole image is resized to the model input (saliency uses no crop); augmentation is a
horizontal flip (p = 0.5, image and mask together) and the pose recipe's per-channel colour gains.
As for pose (pose_dataset), sample i of epoch e draws its augmentation from numpy's generator
seeded with (seed, e, i), so runs are reproducible and resumable whatever the worker count.
"""

from __future__ import annotations

import numpy as np
import torch

from lbdeploy.data.saliency import resize_image, resize_mask
from lbdeploy.training.seeded_set import SeededTrainingSet


class SaliencyTrainingSet(SeededTrainingSet):
    """Training samples of a saliency dataset: (image [3, H, W], mask [1, H, W] float 0/1).

    Args:
        dataset: images and masks (lbdeploy.data.saliency.SaliencyDataset).
        input_size: model input (width, height).
        mean, std: input normalization (RGB, after scaling pixels to [0, 1]).
        augment: flip and colour-gain ranges (scale and rotation are not used).
        seed: base seed of the per-sample augmentation.
    """

    def __getitem__(self, index: int):
        aug = self.augmentation(index)
        image, mask = self.dataset.load(int(index))
        pixels, mask = resize_image(image, self.input_size), resize_mask(mask, self.input_size)
        if aug.flip:
            pixels, mask = pixels[:, ::-1], mask[:, ::-1]
        if aug.gains != (1.0, 1.0, 1.0):
            pixels = np.clip(pixels.astype(np.float32) * np.asarray(aug.gains, dtype=np.float32), 0, 255).astype(np.uint8)
        target = np.ascontiguousarray(mask, dtype=np.float32)[None]
        return self.image_tensor(pixels), torch.from_numpy(target)
