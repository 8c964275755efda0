"""Saliency datasets: an image and a binary mask of its salient object per sample.

- `SaliencyFolder`: the DUTS / ECSSD / HKU-IS / PASCAL-S / DUT-OMRON layout, an images folder and a
  masks folder side by side, matched by file stem (`im001.jpg` <-> `im001.png`);
- `SyntheticSaliency`: generated on the fly, salient shapes on textured backgrounds, a pure
  function of (seed, split, index), so the whole saliency pipeline trains and evaluates here.

Both are `SaliencyDataset`s: `len(d)`, `d.load(i) -> (image HxWx3 uint8 RGB, mask HxW bool)`.
To add a dataset, subclass SaliencyDataset and add its opener to lbdeploy.data.DATASETS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lbdeploy.data.synthetic import _background, _colour
from lbdeploy.errors import ConfigError, InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MASK_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg")
# Folder names of the common releases: DUTS-TR-Image / DUTS-TR-Mask, ECSSD images / ground_truth_mask, ...
IMAGE_DIRS = ("images", "image", "imgs", "im")
MASK_DIRS = ("masks", "mask", "gt", "gts", "ground_truth_mask", "groundtruth")
MASK_THRESHOLD = 128  # mask pixels >= this are salient (masks are 0/255, edges may be anti-aliased)


class SaliencyDataset(ABC):
    """Base class of the saliency datasets: `load(index)` gives the image and its binary mask."""

    task = "saliency"
    name = "saliency"

    def __init__(self, split: str):
        self.split = split

    @abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    @abstractmethod
    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image [H, W, 3] uint8 RGB, mask [H, W] bool) of sample `index`."""

    def describe(self) -> str:
        """One line naming the dataset, split and size."""
        return f"{self.name} {self.split} ({len(self)} images)"


def _find_dir(root: Path, names: tuple[str, ...], suffix: str) -> Path | None:
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        lowered = child.name.lower()
        if lowered in names or lowered.endswith(suffix):
            return child
    return None


def _files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes}


class SaliencyFolder(SaliencyDataset):
    """Images and masks of a folder in the DUTS / ECSSD layout.

    Args:
        root: a folder holding an images folder (`images`, `imgs`, `*-Image`, ...) and a masks
            folder (`masks`, `gt`, `ground_truth_mask`, `*-Mask`, ...); files match by stem.
        split: the split it serves (a folder is one split).
    Raises:
        ConfigError: no such folder, or no images / masks folder in it.
        InputError: an image without a mask, or no images at all.
    """

    def __init__(self, root: Path, split: str):
        super().__init__(split)
        root = Path(root)
        if not root.is_dir():
            raise ConfigError(f"{root}: no such folder; --data saliency:PATH needs a folder with images/ and masks/")
        images_dir, masks_dir = _find_dir(root, IMAGE_DIRS, "-image"), _find_dir(root, MASK_DIRS, "-mask")
        if images_dir is None or masks_dir is None:
            raise ConfigError(f"{root}: expected an images folder ({'/'.join(IMAGE_DIRS)} or *-Image) and a masks "
                              f"folder ({'/'.join(MASK_DIRS)} or *-Mask) in it")
        images, masks = _files(images_dir, IMAGE_SUFFIXES), _files(masks_dir, MASK_SUFFIXES)
        unmatched = sorted(set(images) - set(masks))
        if unmatched:
            raise InputError(f"{images_dir}: {len(unmatched)} image(s) have no mask of the same name in {masks_dir} "
                             f"(e.g. {unmatched[:3]}); add the masks or remove the images")
        if not images:
            raise InputError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.name = root.name
        self.pairs = [(images[stem], masks[stem]) for stem in sorted(images)]

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[index]
        try:
            image = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.uint8)
            mask = np.asarray(Image.open(mask_path).convert("L"), dtype=np.uint8) >= MASK_THRESHOLD
        except OSError as err:
            raise InputError(f"cannot read {image_path} / {mask_path}: {err}") from None
        if mask.shape != image.shape[:2]:
            raise InputError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                             f"{image.shape[1]}x{image.shape[0]}; masks must have their image's size")
        return image, mask


SYNTHETIC_SIZES = {"train": 4000, "val": 200}
SPLIT_STREAMS = {"train": 0, "val": 1}
DEFAULT_IMAGE_SIZE = 96


def _object_mask(rng: np.random.Generator, size: int) -> Image.Image:
    """The silhouette ('L', 255 inside) of 1-2 salient shapes: ellipses, polygons, rounded boxes."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    centre = rng.uniform(0.3, 0.7, size=2) * size
    extent = rng.uniform(0.2, 0.38) * size
    for part in range(int(rng.integers(1, 3))):
        cx, cy = centre + (rng.uniform(-0.6, 0.6, size=2) * extent if part else 0.0)
        rx, ry = extent * rng.uniform(0.6, 1.0, size=2)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
        elif kind == 1:
            corners = int(rng.integers(4, 9))
            angles = (np.arange(corners) + rng.uniform(-0.3, 0.3, size=corners)) * 2 * np.pi / corners
            radius = rng.uniform(0.7, 1.0, size=corners)
            draw.polygon([(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radius)], fill=255)
        else:
            draw.rounded_rectangle((cx - rx, cy - ry, cx + rx, cy + ry), radius=float(min(rx, ry) * 0.4), fill=255)
    return mask


def _object_texture(rng: np.random.Generator, size: int) -> Image.Image:
    """A saturated colour with stripes of a shade of it: the salient object's surface."""
    base = np.array(_colour(rng), dtype=np.float64)
    base = np.clip((base - base.mean()) * 1.8 + base.mean(), 0, 255)  # more saturated than the background
    yy, xx = np.mgrid[0:size, 0:size]
    angle, period = rng.uniform(0, np.pi), rng.uniform(3, 9)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0
    shade = rng.uniform(0.55, 0.85)
    pixels = np.where(stripes[..., None], base, base * shade)
    return Image.fromarray(pixels.astype(np.uint8))


class SyntheticSaliency(SaliencyDataset):
    """Generated saliency set: 1-2 sharp, saturated, striped shapes (the mask) over a blurred,
    textured background with flat distractor shapes; deterministic per (seed, split, index).

    Args:
        split: "train" or "val" (independent random streams).
        size: number of samples (default 4000 train / 200 val).
        seed: base seed of the whole set.
        image_size: square image side in pixels.
    Raises:
        ConfigError: an unknown split, a non-positive size or an image_size below 32.
    """

    name = "synthetic-saliency"

    def __init__(self, split: str = "train", size: int | None = None, seed: int = 0,
                 image_size: int = DEFAULT_IMAGE_SIZE):
        super().__init__(split)
        if split not in SPLIT_STREAMS:
            raise ConfigError(f"synthetic-saliency split must be one of {sorted(SPLIT_STREAMS)}, got {split!r}")
        self.size = SYNTHETIC_SIZES[split] if size is None else int(size)
        if self.size <= 0 or image_size < 32:
            raise ConfigError(f"synthetic-saliency needs size > 0 and image_size >= 32 (got {self.size}, {image_size})")
        self.seed, self.image_size = int(seed), int(image_size)

    def __len__(self) -> int:
        return self.size

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.size:
            raise IndexError(f"synthetic-saliency {self.split} has {self.size} samples, asked {index}")
        rng = np.random.default_rng([self.seed, SPLIT_STREAMS[self.split], int(index)])
        size = self.image_size
        image = _background(rng, size).filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 2.0)))
        mask = _object_mask(rng, size)
        image.paste(_object_texture(rng, size), mask=mask)
        return np.asarray(image, dtype=np.uint8), np.asarray(mask) >= MASK_THRESHOLD


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An RGB image resized to `size` (width, height), bilinear: the saliency network's input."""
    if image.shape[1] == size[0] and image.shape[0] == size[1]:
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A binary mask resized to `size` (width, height): bilinear, then >= 0.5."""
    if mask.shape[1] == size[0] and mask.shape[0] == size[1]:
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image) >= MASK_THRESHOLD


def resize_probabilities(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A saliency map [h, w] in [0, 1] resized (bilinear) to `shape` (H, W): back to the image's size."""
    if prob.shape == tuple(shape):
        return prob
    resized = Image.fromarray(prob.astype(np.float32)).resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)
