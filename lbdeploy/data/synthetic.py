"""A procedural pose data set: articulated stick figures with the 16 MPII joints.

Each sample is a person-like figure (torso polygon, limbs as thick round-capped segments, an
elliptical head) in a random pose, size, limb thickness and colour, on a random textured
background with distractor shapes. Joints and the head box are known exactly, so the set trains
and evaluates the whole pipeline (crops, augmentation, heatmaps, PCKh) without downloading data.

Figures always face the camera, so left and right are told apart as in photographs: the person's
left shoulder and hip sit on the image-right side of the body axis (neck -> head top pointing up).
That cue survives a horizontal flip with the left/right labels swapped, which is what flip
augmentation assumes; a colour code per side would not (it would contradict the swapped labels),
so limb shades vary at random and carry no side information.

Every sample is a pure function of (seed, split, index): `SyntheticPoses(split, seed=s).record(i)`
and `load_image` of it give the same annotation and pixels on every run (with the same Pillow).
The pose and the drawing use separate random streams, so reading a record's annotation does not
render its image.

To change the figures, edit `_pose` (geometry) or `_draw_figure` (appearance); keep the joint
order of lbdeploy.pose.skeletons.MPII.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lbdeploy.data.records import PoseDataset, PoseRecord
from lbdeploy.errors import ConfigError
from lbdeploy.pose.skeletons import MPII

DEFAULT_SIZES = {"train": 20000, "val": 500}
SPLIT_STREAMS = {"train": 0, "val": 1}
DEFAULT_IMAGE_SIZE = 192
# Crop height = CROP_PADDING x the figure's larger bounding-box side (the MPII loaders pad by 1.25).
CROP_PADDING = 1.25

# MPII joint indices used when building the figure.
R_ANKLE, R_KNEE, R_HIP, L_HIP, L_KNEE, L_ANKLE, PELVIS, THORAX, NECK, HEAD_TOP = range(10)
R_WRIST, R_ELBOW, R_SHOULDER, L_SHOULDER, L_ELBOW, L_WRIST = range(10, 16)
RIGHT_LIMBS = ((R_SHOULDER, R_ELBOW, R_WRIST), (R_HIP, R_KNEE, R_ANKLE))
LEFT_LIMBS = ((L_SHOULDER, L_ELBOW, L_WRIST), (L_HIP, L_KNEE, L_ANKLE))


def _unit(angle: float) -> np.ndarray:
    return np.array([np.sin(angle), -np.cos(angle)])  # angle 0 points up in image coordinates


def _rotate(vector: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * vector[0] - s * vector[1], s * vector[0] + c * vector[1]])


def _limb(start: np.ndarray, down: np.ndarray, outward: np.ndarray, lengths, spread, bend) -> tuple:
    """Two segments from `start`: the first `spread` radians away from `down` toward `outward`."""
    upper = np.cos(spread) * down + np.sin(spread) * outward
    middle = start + lengths[0] * upper
    return middle, middle + lengths[1] * _rotate(upper, bend)


def _pose(rng: np.random.Generator, image_size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Joints [16, 2], head ellipse (centre, half axes, angle) and limb width of one random figure."""
    torso = 1.0
    tilt = rng.uniform(-0.6, 0.6)
    up = _unit(tilt)
    across = np.array([-up[1], up[0]])  # toward image right when the figure faces the camera
    down = -up
    joints = np.zeros((16, 2))
    joints[THORAX] = joints[PELVIS] + torso * up
    joints[NECK] = joints[THORAX] + 0.22 * torso * _rotate(up, rng.uniform(-0.2, 0.2))
    head_len = 0.42 * torso * rng.uniform(0.9, 1.1)
    joints[HEAD_TOP] = joints[NECK] + head_len * _rotate(up, rng.uniform(-0.45, 0.45))
    width = rng.uniform(0.75, 1.2)
    joints[R_SHOULDER] = joints[THORAX] - 0.32 * width * across
    joints[L_SHOULDER] = joints[THORAX] + 0.32 * width * across
    joints[R_HIP] = joints[PELVIS] - 0.2 * width * across
    joints[L_HIP] = joints[PELVIS] + 0.2 * width * across
    arm = (0.5 * rng.uniform(0.9, 1.1), 0.45 * rng.uniform(0.9, 1.1))
    leg = (0.75 * rng.uniform(0.9, 1.1), 0.7 * rng.uniform(0.9, 1.1))
    for side, (shoulder, elbow, wrist), (hip, knee, ankle) in ((-1, *RIGHT_LIMBS), (1, *LEFT_LIMBS)):
        outward = side * across
        joints[elbow], joints[wrist] = _limb(joints[shoulder], down, outward, arm,
                                             rng.uniform(-0.35, 2.9), rng.uniform(-2.4, 2.4))
        joints[knee], joints[ankle] = _limb(joints[hip], down, outward, leg,
                                            rng.uniform(-0.25, 1.1), rng.uniform(-1.7, 1.7))
    head_center = 0.5 * (joints[NECK] + joints[HEAD_TOP])
    head_axes = np.array([0.55 * head_len, 0.4 * head_len])  # along, across the neck->top axis
    head_dir = joints[HEAD_TOP] - joints[NECK]
    head_angle = float(np.arctan2(head_dir[1], head_dir[0]))
    limb_width = rng.uniform(0.1, 0.2)

    # Fit the figure into the image: its larger bounding-box side becomes `fill` x image size.
    extent = _head_extent(head_axes, head_angle)
    low = np.minimum(joints.min(axis=0), head_center - extent) - limb_width
    high = np.maximum(joints.max(axis=0), head_center + extent) + limb_width
    zoom = rng.uniform(0.5, 0.85) * image_size / float((high - low).max())
    room = image_size - zoom * (high - low)
    offset = rng.uniform(0.0, 1.0, size=2) * room - zoom * low
    joints = joints * zoom + offset
    head = np.array([*(head_center * zoom + offset), *(head_axes * zoom), head_angle])
    return joints, head, limb_width * zoom


def _head_extent(axes: np.ndarray, angle: float) -> np.ndarray:
    """Half width and half height of the axis-aligned box around a rotated ellipse."""
    a, b = axes
    c, s = np.cos(angle), np.sin(angle)
    return np.array([np.hypot(a * c, b * s), np.hypot(a * s, b * c)])


def _head_box(head: np.ndarray) -> tuple:
    extent = _head_extent(head[2:4], head[4])
    return (float(head[0] - extent[0]), float(head[1] - extent[1]), float(head[0] + extent[0]), float(head[1] + extent[1]))


def _colour(rng: np.random.Generator, low: float = 0.0, high: float = 1.0) -> tuple:
    return tuple(int(v) for v in rng.uniform(low * 255, high * 255, size=3))


def _shade(colour: tuple, towards: int, amount: float) -> tuple:
    return tuple(int(round(c + (towards - c) * amount)) for c in colour)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Smooth colour noise, grain and a few distractor shapes."""
    cells = int(rng.integers(2, 7))
    coarse = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.uint8)
    image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    grain = rng.normal(0.0, rng.uniform(2, 14), size=(size, size, 3))
    image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + grain, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 6))):
        x0, y0 = rng.uniform(-0.2, 1.0, size=2) * size
        w, h = rng.uniform(0.05, 0.5, size=2) * size
        shape = int(rng.integers(0, 3))
        if shape == 0:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=_colour(rng))
        elif shape == 1:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=_colour(rng))
        else:
            draw.line((x0, y0, x0 + w, y0 + h), fill=_colour(rng), width=int(rng.integers(1, 5)))
    return image


def _draw_figure(image: Image.Image, rng: np.random.Generator, joints: np.ndarray, head: np.ndarray, width: float) -> None:
    draw = ImageDraw.Draw(image)
    body = _colour(rng, 0.25, 0.75)
    line_width = max(int(round(width)), 2)

    def limb(chain, colour):
        points = [tuple(joints[j]) for j in chain]
        draw.line(points, fill=colour, width=line_width, joint="curve")
        for x, y in points:
            r = line_width / 2.0
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)

    limbs = [(chain, _shade(body, int(rng.choice([0, 255])), rng.uniform(0.0, 0.45)))
             for chain in LEFT_LIMBS + RIGHT_LIMBS]
    order = rng.permutation(len(limbs))
    behind, in_front = order[:2], order[2:]
    for k in behind:
        limb(*limbs[k])
    torso = [tuple(joints[j]) for j in (R_SHOULDER, L_SHOULDER, L_HIP, R_HIP)]
    draw.polygon(torso, fill=body)
    limb((NECK, THORAX, PELVIS), body)
    for k in in_front:
        limb(*limbs[k])
    cx, cy, a, b, angle = head
    ellipse = Image.new("L", image.size, 0)
    ImageDraw.Draw(ellipse).ellipse((cx - a, cy - b, cx + a, cy + b), fill=255)
    ellipse = ellipse.rotate(-np.degrees(angle), center=(cx, cy), resample=Image.Resampling.BILINEAR)
    image.paste(Image.new("RGB", image.size, _colour(rng, 0.3, 0.95)), mask=ellipse)


class SyntheticPoses(PoseDataset):
    """Procedural stick-figure people with MPII joints; deterministic per (seed, split, index).

    Args:
        split: "train" or "val" (independent random streams).
        size: number of samples (default 20000 for train, 500 for val).
        seed: base seed of the whole set.
        image_size: square image side in pixels.
    Raises:
        ConfigError: an unknown split or a non-positive size.
    """

    name = "synthetic"
    joint_set = MPII
    metric = "pckh"
    threshold = 0.5
    norm = "head"

    def __init__(self, split: str = "train", size: int | None = None, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE):
        super().__init__(split)
        if split not in SPLIT_STREAMS:
            raise ConfigError(f"synthetic split must be one of {sorted(SPLIT_STREAMS)}, got {split!r}")
        self.size = DEFAULT_SIZES[split] if size is None else int(size)
        if self.size <= 0 or image_size < 32:
            raise ConfigError(f"synthetic set needs size > 0 and image_size >= 32 (got {self.size}, {image_size})")
        self.seed = int(seed)
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return self.size

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLIT_STREAMS[self.split], int(index), stream])

    def record(self, index: int) -> PoseRecord:
        """The annotation of sample `index` (computed, not rendered)."""
        if not 0 <= index < self.size:
            raise IndexError(f"synthetic {self.split} has {self.size} samples, asked {index}")
        joints, head, _ = _pose(self._rng(index, 0), self.image_size)
        box = _head_box(head)
        low, high = np.minimum(joints.min(axis=0), box[:2]), np.maximum(joints.max(axis=0), box[2:])
        center = 0.5 * (low + high)
        scale = CROP_PADDING * float((high - low).max()) / 200.0
        return PoseRecord(image=int(index), joints=joints, visible=np.ones(16, dtype=bool),
                          center=center, scale=scale, head_box=box)

    def load_image(self, record: PoseRecord) -> np.ndarray:
        """Render the record's image (HxWx3 uint8 RGB)."""
        joints, head, width = _pose(self._rng(record.image, 0), self.image_size)
        rng = self._rng(record.image, 1)
        image = _background(rng, self.image_size)
        _draw_figure(image, rng, joints, head, width)
        if rng.uniform() < 0.3:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
        return np.asarray(image, dtype=np.uint8)


def person_image(dataset: SyntheticPoses, index: int, size: int = 256) -> np.ndarray:
    """Sample `index` cropped to its padded person box and resized to size x size (HxWx3 uint8).

    The person then fills the image the way training crops do, so whole-image inference
    (`lbdeploy infer` without --box) sees what the model was trained on; the demo's sample.jpg
    is made this way.
    """
    from lbdeploy.pose.affine import crop_matrix
    from lbdeploy.transforms import crop

    record = dataset.record(index)
    return crop(dataset.load_image(record), crop_matrix(record.center, record.scale, (size, size)), (size, size))
