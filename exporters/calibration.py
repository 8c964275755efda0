"""Calibration images for int8 export: real images through the dataset loaders, split in two.

`--calibration DATA` names where the images come from:

- `synthetic[:TRAIN[,VAL]]` (the default), `mpii:PATH`, `lsp:PATH`: a dataset of lbdeploy.data;
  each person is cropped at its annotated center/scale like `lbdeploy eval` does. Calibration uses
  the train split, the accuracy gate the val split, so the gate's images are never calibrated on.
- `folder:PATH` or an existing folder: every image file in it (sorted by name), each cropped as a
  whole image like `lbdeploy infer` without a box; the first N calibrate, the following ones
  (up to GATE_IMAGES) are held out for the gate.

`load_calibration(...)` returns both sets as normalized model inputs (NCHW float32, normalized as
the manifest says); `ImageBatches` feeds one of them to ONNX Runtime's calibrators. To add a
source, add a loader to SOURCES returning (calibration, held-out) uint8 crop lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lbdeploy.errors import CalibrationError, ConfigError, InputError

DEFAULT_DATA = "synthetic"
DEFAULT_IMAGES = 32
GATE_IMAGES = 32  # held-out images of the accuracy gate (16 joints each: 512 joints)
MIN_GATE_IMAGES = 8
METHODS = ("percentile", "minmax", "entropy")  # the first is the default
BATCH = 8  # images per calibration run
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class CalibrationOptions:
    """What `lbdeploy export --quantize int8` calibrates on.

    Attributes:
        data: the image source (see the module docstring).
        images: number of calibration images.
        method: "minmax", "entropy" or "percentile" (ONNX Runtime's calibrators).
        seed: seed of the synthetic set.
    """

    data: str = DEFAULT_DATA
    images: int = DEFAULT_IMAGES
    method: str = METHODS[0]
    seed: int = 0

    def check(self) -> None:
        """Raises: ConfigError for an unknown method or a non-positive image count."""
        if self.method not in METHODS:
            raise ConfigError(f"--calibration-method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.images < 1:
            raise ConfigError(f"--calibration-images must be at least 1, got {self.images}")

    def to_dict(self, held_out: int) -> dict:
        """The manifest's record of the calibration."""
        return {"method": self.method, "data": self.data, "images": self.images, "held_out_images": held_out,
                **({"seed": self.seed} if self.data.startswith("synthetic") else {})}


@dataclass
class CalibrationSet:
    """Normalized model inputs: `calibration` [N, 3, H, W] and the gate's `held_out` [M, 3, H, W]."""

    calibration: np.ndarray
    held_out: np.ndarray


def _dataset_crops(dataset, count: int, input_size: tuple[int, int], what: str) -> list[np.ndarray]:
    from lbdeploy.data.augment import crop_matrix_for
    from lbdeploy.transforms import crop

    crops = []
    for index in range(count):
        record = dataset.record(index)
        try:
            image = dataset.load_image(record)
        except InputError as err:
            raise CalibrationError(f"{what}: cannot read image {record.image!r} ({err}); fix or remove it") from None
        crops.append(crop(image, crop_matrix_for(record, input_size), input_size))
    return crops


def _from_dataset(spec: str, count: int, input_size, seed: int) -> tuple[list, list]:
    from lbdeploy.data import open_dataset

    train, val = open_dataset(spec, "train", seed), open_dataset(spec, "val", seed)
    if len(train) < count:
        raise CalibrationError(f"--calibration {spec} has {len(train)} training images, fewer than the "
                               f"{count} asked by --calibration-images; lower it or use a larger set")
    if len(val) < MIN_GATE_IMAGES:
        raise CalibrationError(f"--calibration {spec} has {len(val)} validation images; the accuracy gate "
                               f"needs at least {MIN_GATE_IMAGES} held out from calibration")
    return (_dataset_crops(train, count, input_size, spec),
            _dataset_crops(val, min(GATE_IMAGES, len(val)), input_size, spec))


def _from_folder(folder: Path, count: int, input_size) -> tuple[list, list]:
    from lbdeploy.pose.affine import crop_matrix, image_center_scale
    from lbdeploy.transforms import crop, load_image

    if not folder.is_dir():
        raise CalibrationError(f"calibration folder {folder} does not exist; pass a folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    needed = count + MIN_GATE_IMAGES
    if len(files) < needed:
        raise CalibrationError(f"calibration folder {folder} has {len(files)} images ({', '.join(IMAGE_SUFFIXES)}); "
                               f"{count} calibration images + {MIN_GATE_IMAGES} held out for the accuracy gate "
                               f"need {needed}: add images or lower --calibration-images")
    crops = []
    aspect = input_size[0] / input_size[1]
    for path in files[:count + GATE_IMAGES]:
        try:
            image = load_image(path)
        except InputError as err:
            raise CalibrationError(f"calibration image unreadable: {err}; fix or remove it") from None
        center, scale = image_center_scale(image.shape[1], image.shape[0], aspect)
        crops.append(crop(image, crop_matrix(center, scale, input_size), input_size))
    return crops[:count], crops[count:]


def load_calibration(options: CalibrationOptions, input_size: tuple[int, int], input_spec: dict) -> CalibrationSet:
    """Read, crop and normalize the calibration and held-out images.

    Args:
        options: the source, image count and seed.
        input_size: model input (height, width).
        input_spec: the manifest's "input" section (pixel_scale, mean, std).
    Returns:
        The two sets as model inputs.
    Raises:
        CalibrationError: an empty, unreadable or too small source; ConfigError: a malformed spec.
    """
    from lbdeploy.transforms import normalize

    options.check()
    size = (int(input_size[1]), int(input_size[0]))  # crops take (width, height)
    name, _, arg = options.data.partition(":")
    if name == "folder":
        calibration, held_out = _from_folder(Path(arg), options.images, size)
    elif ":" not in options.data and Path(options.data).is_dir():
        calibration, held_out = _from_folder(Path(options.data), options.images, size)
    else:
        try:
            calibration, held_out = _from_dataset(options.data, options.images, size, options.seed)
        except (ConfigError, InputError) as err:
            raise CalibrationError(f"--calibration {options.data}: {err}") from None
    return CalibrationSet(normalize(np.stack(calibration), input_spec), normalize(np.stack(held_out), input_spec))


def image_batches(images: np.ndarray, input_name: str):
    """An onnxruntime.quantization CalibrationDataReader over `images`, BATCH at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class ImageBatches(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{input_name: images[i:i + BATCH]} for i in range(0, len(images), BATCH)])

        def get_next(self):
            return next(self.feeds, None)

    return ImageBatches()
