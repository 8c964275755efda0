"""Training crops: the person crop of a record, with the paper's augmentation, and its targets.

One `Augmentation` is drawn per sample from a `numpy.random.Generator` (random scale +-25 %,
rotation +-30 degrees, horizontal flip with left/right joint swap, per-channel colour gains
+-20 %). It becomes a single 2x3 image->crop matrix (crop geometry of lbdeploy.pose.affine, then
rotation about the crop centre, then the mirror x -> W - 1 - x), so the image and the joints move
through exactly the same transform; the warp is the runtime's (lbdeploy.transforms.crop), so
training crops and inference crops are pixel-identical when no augmentation is drawn.

To add an augmentation, add a field to `Augmentation`, draw it in `draw_augmentation` and apply it
in `crop_matrix_for` (geometry) or `training_crop` (pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lbdeploy.data.heatmaps import gaussian_heatmaps
from lbdeploy.data.records import PoseDataset, PoseRecord
from lbdeploy.pose.affine import apply_affine, crop_matrix
from lbdeploy.pose.decode import swap_joints
from lbdeploy.transforms import crop


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the training augmentation (the paper's recipe by default)."""

    scale: float = 0.25  # zoom factor drawn from [1 - scale, 1 + scale]
    rotation: float = 30.0  # degrees, drawn from [-rotation, rotation]
    flip: bool = True  # mirror half of the samples
    colour: float = 0.2  # per-channel gain drawn from [1 - colour, 1 + colour]


NO_AUGMENTATION = AugmentConfig(scale=0.0, rotation=0.0, flip=False, colour=0.0)


@dataclass(frozen=True)
class Augmentation:
    """The transform applied to one sample."""

    zoom: float = 1.0
    degrees: float = 0.0
    flip: bool = False
    gains: tuple = (1.0, 1.0, 1.0)


def draw_augmentation(rng: np.random.Generator, config: AugmentConfig) -> Augmentation:
    """Draw one sample's augmentation from `config`'s ranges."""
    zoom = 1.0 + rng.uniform(-config.scale, config.scale)
    degrees = rng.uniform(-config.rotation, config.rotation)
    flip = bool(config.flip and rng.uniform() < 0.5)
    gains = tuple(float(g) for g in 1.0 + rng.uniform(-config.colour, config.colour, size=3))
    return Augmentation(float(zoom), float(degrees), flip, gains)


def crop_matrix_for(record: PoseRecord, input_size: tuple[int, int], aug: Augmentation = Augmentation()) -> np.ndarray:
    """2x3 image->crop matrix of `record` at `input_size` (width, height) under `aug`.

    A zoom above 1 shows more of the image (the person looks smaller).
    """
    width, height = input_size
    matrix = np.vstack([crop_matrix(record.center, record.scale * aug.zoom, input_size), [0.0, 0.0, 1.0]])
    angle = np.radians(aug.degrees)
    c, s = np.cos(angle), np.sin(angle)
    cx, cy = width / 2.0, height / 2.0
    rotate = np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy], [0.0, 0.0, 1.0]])
    matrix = rotate @ matrix
    if aug.flip:
        matrix = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ matrix
    return matrix[:2]


def training_crop(dataset: PoseDataset, record: PoseRecord, input_size: tuple[int, int],
                  aug: Augmentation = Augmentation()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The augmented crop of a record and its joints in crop pixels.

    Returns:
        (crop [H, W, 3] uint8, joints [J, 2] in crop pixels, visible [J] bool); with a flip the
        left/right joints are swapped so that index j still names the same body part.
    """
    matrix = crop_matrix_for(record, input_size, aug)
    pixels = crop(dataset.load_image(record), matrix, input_size)
    if aug.gains != (1.0, 1.0, 1.0):
        pixels = np.clip(pixels.astype(np.float32) * np.asarray(aug.gains, dtype=np.float32), 0, 255).astype(np.uint8)
    joints = apply_affine(record.joints, matrix)
    visible = record.visible.copy()
    if aug.flip:
        pairs = dataset.joint_set.flip_pairs
        joints = swap_joints(joints[None], pairs)[0]
        visible = swap_joints(visible[None], pairs)[0]
    return pixels, joints, visible


def training_sample(dataset: PoseDataset, index: int, input_size: tuple[int, int], stride: int, sigma: float,
                    aug: Augmentation = Augmentation()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop, heatmap targets and joint weights of sample `index`.

    Returns:
        (crop [H, W, 3] uint8, targets [J, H/stride, W/stride] float32, weights [J] float32).
    """
    pixels, joints, visible = training_crop(dataset, dataset.record(index), input_size, aug)
    size = (input_size[0] // stride, input_size[1] // stride)
    maps, weights = gaussian_heatmaps(joints / float(stride), visible, size, sigma)
    return pixels, maps, weights
