"""Image input, shared by the runtime, training and evaluation: decoding, the affine person crop
and normalization.

Images are HxWx3 uint8 arrays in RGB channel order everywhere. `load_image`
accepts a file path, encoded bytes (any format Pillow reads) or such an array, and refuses
undecodable data, wrong shapes, images above a pixel budget and images thinner than
1:`DEFAULT_MAX_ASPECT_RATIO` before decoding them. `check_image_size` is the one size check: the
runtime applies it to every image it derives from the input as well (e.g. the HOG detector's
enlarged copy), so no intermediate image outgrows the budget.
`crop` warps a person region into the model input with Pillow's bilinear affine transform, and
`normalize` applies the artifact's preprocessing contract (docs/artifact.md):

    input = ((pixels_RGB * pixel_scale) - mean) / std, as NCHW float32

To support another input kind (e.g. a video frame object), convert it to such an array in
`load_image`.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from lbdeploy.errors import InputError
from lbdeploy.pose.affine import invert_affine

DEFAULT_MAX_PIXELS = 40_000_000
# Longest side / shortest side. A thinner image holds no person or object to find, and work that
# scales a side up to a minimum (a detector window, a model input) would multiply its pixels.
DEFAULT_MAX_ASPECT_RATIO = 100


def check_image_size(width: int, height: int, max_pixels: int = DEFAULT_MAX_PIXELS, what: str = "the image") -> None:
    """Refuse an image size above the pixel budget or thinner than 1:DEFAULT_MAX_ASPECT_RATIO.

    Args:
        width, height: the size in pixels (of a decoded image, or of one about to be made from it).
        max_pixels: most pixels allowed.
        what: names the image in the message.

    Raises:
        InputError: a side below 1 pixel, more than `max_pixels` pixels, or a side more than
            DEFAULT_MAX_ASPECT_RATIO times the other.
    """
    if width < 1 or height < 1:
        raise InputError(f"{what} is {width}x{height} pixels; an image needs at least one pixel per side")
    if width * height > max_pixels:
        raise InputError(f"{what} is {width}x{height} pixels, above the limit of {max_pixels} pixels; "
                         "resize it or raise --max-pixels")
    if max(width, height) > DEFAULT_MAX_ASPECT_RATIO * min(width, height):
        raise InputError(f"{what} is {width}x{height} pixels, thinner than 1:{DEFAULT_MAX_ASPECT_RATIO}; "
                         "crop or pad it to a less extreme shape")


def _check_array(image: np.ndarray, max_pixels: int) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"an image array must be HxWx3 RGB, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise InputError(f"an image array must be uint8 (0..255), got dtype {image.dtype}")
    check_image_size(image.shape[1], image.shape[0], max_pixels, "the image array")
    return np.ascontiguousarray(image)


def _decode(data: bytes | str, max_pixels: int, what: str) -> np.ndarray:
    source = data if isinstance(data, str) else io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                check_image_size(*img.size, max_pixels, what)
                rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        # Pillow's "cannot identify" message names its file object (<_io.BytesIO object at 0x...>)
        reason = "Pillow does not recognise its format" if isinstance(err, UnidentifiedImageError) else err
        raise InputError(f"{what} is not a readable image ({reason}); send a JPEG, PNG or another Pillow format") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InputError(f"{what} is too large to decode safely ({err}); resize it") from err
    return np.asarray(rgb, dtype=np.uint8)


def load_image(image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image into an HxWx3 uint8 RGB array.

    Args:
        image: a path (str or os.PathLike), encoded bytes, or an HxWx3 uint8 RGB array.
        max_pixels: refuse images with more pixels than this (checked before decoding).

    Returns:
        HxWx3 uint8 array, RGB channel order.

    Raises:
        InputError: a missing file, undecodable bytes, a wrong array shape or dtype, too many pixels,
            or a shape thinner than 1:DEFAULT_MAX_ASPECT_RATIO (see `check_image_size`).
    """
    if isinstance(image, np.ndarray):
        return _check_array(image, max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        if len(image) == 0:
            raise InputError("the image is empty (0 bytes); send an encoded JPEG or PNG")
        return _decode(bytes(image), max_pixels, "the image data")
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise InputError(f"image file {path!r} does not exist")
        return _decode(path, max_pixels, f"image file {path!r}")
    raise InputError(f"cannot read an image from a {type(image).__name__}; pass a path, bytes or an HxWx3 uint8 array")


def crop(image: np.ndarray | Image.Image, matrix: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Warp `image` by the 2x3 image->crop `matrix` into an (out_w, out_h) crop (bilinear, black outside).

    `image` is an HxWx3 uint8 RGB array, or that array as a Pillow image (to crop one large image
    many times without converting it for each crop). Pillow samples at pixel centres (index + 0.5);
    the matrix is in pixel indices, so the inverse map is conjugated by that half-pixel offset.

    Returns:
        out_h x out_w x 3 uint8 RGB array.
    """
    inverse = invert_affine(matrix)
    linear = inverse[:, :2]
    offset = inverse[:, 2] + 0.5 - linear.sum(axis=1) * 0.5
    data = (linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1], offset[1])
    source = image if isinstance(image, Image.Image) else Image.fromarray(image)
    warped = source.transform(
        tuple(int(v) for v in out_size), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR
    )
    return np.asarray(warped, dtype=np.uint8)


def normalize(crops: np.ndarray, input_spec: dict) -> np.ndarray:
    """[..., H, W, 3] uint8 RGB (one image or a batch) -> [..., 3, H, W] float32 model input per the
    manifest's `input` section (pixel_scale, mean, std), the preprocessing contract of docs/artifact.md."""
    scale = float(input_spec.get("pixel_scale", 1.0 / 255.0))
    mean = np.asarray(input_spec.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32)
    std = np.asarray(input_spec.get("std", [1.0, 1.0, 1.0]), dtype=np.float32)
    pixels = crops.astype(np.float32) * np.float32(scale)
    return np.ascontiguousarray(np.moveaxis((pixels - mean) / std, -1, -3), dtype=np.float32)
