"""Presenting a SaliencyResult: the map as an 8-bit PNG, an overlay on the image, and JSON statistics.

- `saliency_map_image`: the probabilities as a grayscale image (0 = background, 255 = salient);
- `draw_saliency`: the image with salient pixels tinted (opacity proportional to the probability;
  red, or green / blue when the salient object itself is red) and the 0.5 region's box outlined;
- `saliency_to_json`: per-image statistics (mean probability, salient fraction at the threshold,
  box of the salient pixels), small enough for a JSON answer; the full map is the PNG.

To add a format, add a function taking a SaliencyResult here.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

SALIENT_THRESHOLD = 0.5  # a pixel is salient where its probability is >= this
# The tint of salient pixels: of these, the one farthest from the image's mean colour under the map
# (red, unless the salient object is red itself: then green or blue stays visible).
TINTS = np.array([[255, 40, 40], [40, 255, 40], [40, 120, 255]], dtype=np.float32)
_TINT_OPACITY = 0.6
_BOX_COLOR = (255, 230, 0)


def saliency_map_image(result) -> Image.Image:
    """The saliency map as a grayscale ('L') image at the input image's size, probability x 255."""
    return Image.fromarray(np.round(np.clip(result.probabilities, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L")


def saliency_png(result) -> bytes:
    """`saliency_map_image` encoded as PNG bytes."""
    buffer = io.BytesIO()
    saliency_map_image(result).save(buffer, format="PNG")
    return buffer.getvalue()


def salient_box(probabilities: np.ndarray, threshold: float = SALIENT_THRESHOLD) -> list[int] | None:
    """[x, y, w, h] of the pixels at or above `threshold`, None when there are none."""
    ys, xs = np.nonzero(probabilities >= threshold)
    if not len(xs):
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def overlay_tint(image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The TINTS colour farthest from the mean colour of `image` weighted by the saliency `weights`."""
    total = float(weights.sum())
    mean = (image.reshape(-1, 3).astype(np.float32) * weights.reshape(-1, 1)).sum(axis=0) / total if total > 0 \
        else image.reshape(-1, 3).mean(axis=0)
    return TINTS[int(np.argmax(np.linalg.norm(TINTS - mean, axis=1)))]


def draw_saliency(image: np.ndarray, result) -> Image.Image:
    """The image with salient pixels tinted and the salient region's box outlined.

    Args:
        image: HxWx3 uint8 RGB array (the image that was predicted on); result: its SaliencyResult.
    Returns:
        A Pillow RGB image.
    """
    weights = np.clip(result.probabilities, 0.0, 1.0)
    alpha = (weights * _TINT_OPACITY)[..., None]
    blended = image.astype(np.float32) * (1.0 - alpha) + overlay_tint(image, weights) * alpha
    canvas = Image.fromarray(np.round(blended).astype(np.uint8), mode="RGB")
    box = salient_box(result.probabilities)
    if box is not None:
        x, y, w, h = box
        ImageDraw.Draw(canvas).rectangle([x, y, x + w - 1, y + h - 1], outline=_BOX_COLOR,
                                         width=max(1, round(max(canvas.size) / 200)))
    return canvas


def saliency_to_json(result, image_id=None) -> dict:
    """Statistics of one saliency map.

    Returns:
        {"image_id", "width", "height", "threshold", "mean" (mean probability), "max",
        "salient_fraction" (pixels >= threshold), "box" ([x, y, w, h] of those pixels, or null)}
    """
    prob = result.probabilities
    width, height = result.image_size
    return {"image_id": image_id, "width": width, "height": height, "threshold": SALIENT_THRESHOLD,
            "mean": round(float(prob.mean()), 5), "max": round(float(prob.max()), 5),
            "salient_fraction": round(float((prob >= SALIENT_THRESHOLD).mean()), 5),
            "box": salient_box(prob)}
