"""The saliency task at run time: the SaliencyPredictor (image in, saliency map at the image's size
out, on any backend), its SaliencyResult, the map as PNG, an overlay and JSON statistics, the
POST /v1/saliency endpoint (runtime/tasks/saliency_routes.py) and MAE / max-F evaluation.

    from lbdeploy.runtime.predictor import open_predictor
    predictor = open_predictor("out/")               # a saliency artifact folder (or a CPD model.pt)
    result = predictor.predict("photo.jpg")
    result.probabilities  # [H, W] float32 in [0, 1], the image's own size

Pipeline (as the saliency set is trained and evaluated, lbdeploy.evaluation.saliency_eval): the
whole image resized (bilinear) to the model input, normalized per the manifest, one backend call,
the manifest's output activation (lbdeploy.tasks.saliency.ACTIVATIONS) on the final logit map, and
the map resized (bilinear) back to the image.

Presenting a result: `saliency_map_image` (the probabilities as a grayscale image, 0 = background,
255 = salient), `draw_saliency` (salient pixels tinted, opacity proportional to the probability;
red, or green / blue when the salient object itself is red; and the 0.5 region's box outlined), `saliency_to_json` (mean probability, salient fraction at the
threshold, box of the salient pixels; the full map is the PNG).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lbdeploy.data.saliency import resize_image, resize_probabilities
from lbdeploy.errors import ConfigError
from lbdeploy.tasks import get_task
from lbdeploy.tasks.saliency import ACTIVATIONS
from lbdeploy.transforms import DEFAULT_MAX_PIXELS, load_image, normalize
from lbdeploy.runtime.deadline import check_deadline
from lbdeploy.runtime.loading import PredictorRecipe
from lbdeploy.runtime.tasks.base import RuntimeTask, TaskPredictor

SALIENT_THRESHOLD = 0.5  # a pixel is salient where its probability is >= this
# The tint of salient pixels: of these, the one farthest from the image's mean colour under the map
# (red, unless the salient object is red itself: then green or blue stays visible).
TINTS = np.array([[255, 40, 40], [40, 255, 40], [40, 120, 255]], dtype=np.float32)
_TINT_OPACITY = 0.6
_BOX_COLOR = (255, 230, 0)
@dataclass
class SaliencyResult:
    """The saliency map of one image.

    Attributes:
        probabilities: [H, W] float32 in [0, 1] at the image's size (1 = salient).
        image_size: (width, height) of the input image.
    """

    probabilities: np.ndarray
    image_size: tuple[int, int]


class SaliencyPredictor(TaskPredictor):
    """Salient object detection on a saliency artifact folder or model.pt (task "saliency").

    Args:
        artifact_or_model_pt: artifact folder written by `lbdeploy export`, or a saliency model.pt.
        backend: "auto" (the artifact's own backend; "torch" for a model.pt) or a name of lbdeploy.backends.
        threads: intra-op threads for the backend (None: its default).
        max_pixels: images with more pixels are refused with InputError.
        **backend_opts: passed to the backend constructor.

    Raises:
        ArtifactError: a missing, unknown or modified artifact; ConfigError: not a saliency model, or
        an output activation this runtime does not know; BackendUnavailable / KernelLibraryError: the
        backend cannot run here.
    """

    task = get_task("saliency")

    def __init__(self, artifact_or_model_pt, backend: str = "auto", threads: int | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, **backend_opts):
        super().__init__(artifact_or_model_pt, backend, threads, max_pixels, **backend_opts)
        activation = self.manifest["saliency"].get("output_activation", "sigmoid")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"{self.source} declares output activation {activation!r}; this runtime knows "
                              f"{sorted(ACTIVATIONS)}: upgrade lbdeploy")
        self.activation = ACTIVATIONS[activation]

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """Saliency probabilities of images already at the model input size.

        Args:
            images: [N, h, w, 3] uint8 RGB, (w, h) = `input_size`.
        Returns:
            [N, h, w] float32 probabilities (the `Predict` of lbdeploy.evaluation.saliency_eval).
        """
        logits = self.run_final(normalize(images, self.manifest["input"]))
        return self.activation(logits[:, 0]).astype(np.float32)

    def predict(self, image) -> SaliencyResult:
        """The saliency map of one image.

        Args:
            image: a path, encoded bytes, or an HxWx3 uint8 RGB array.
        Returns:
            SaliencyResult with the map at the image's size.
        Raises:
            InputError: an unreadable or too large image.
        """
        pixels = load_image(image, self.max_pixels)
        prob = self.predict_batch(resize_image(pixels, self.input_size)[None])[0]
        check_deadline()  # a server request past its deadline stops before the map is enlarged to the image
        height, width = pixels.shape[:2]
        return SaliencyResult(resize_probabilities(prob, (height, width)).astype(np.float32), (int(width), int(height)))


class SaliencyPredictorFactory(PredictorRecipe):
    """A picklable recipe for a SaliencyPredictor (servers call it once per process or Ray replica).

    Args: as SaliencyPredictor.
    """

    predictor_class = SaliencyPredictor


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


class SaliencyRuntime(RuntimeTask):
    """The saliency task's runtime record: the SaliencyPredictor, map + overlay drawings, JSON
    statistics, POST /v1/saliency, MAE and max-F evaluation."""

    task = get_task("saliency")
    metric = "MAE and max-F"
    predictor_class = SaliencyPredictor
    endpoints = ("/v1/saliency",)

    def to_json(self, predictor, result, image_id=None) -> dict:
        """saliency_to_json."""
        return saliency_to_json(result, image_id=image_id)

    def drawings(self, pixels, result, predictor, draw: str, image: Path, folder: bool) -> list:
        """The map at `draw` and the overlay beside it as `<stem>.overlay.png`; in a folder
        `<draw>/<image stem>.saliency.png` and `<draw>/<image stem>.overlay.png`."""
        if folder:
            map_path, overlay = Path(draw) / f"{image.stem}.saliency.png", Path(draw) / f"{image.stem}.overlay.png"
        else:
            map_path = Path(draw)
            overlay = map_path.with_name(f"{map_path.stem}.overlay.png")
        return [(map_path, saliency_map_image(result), "saliency map"), (overlay, draw_saliency(pixels, result), "overlay")]

    def add_routes(self, app, settings, dependencies: list) -> None:
        """POST /v1/saliency."""
        from lbdeploy.runtime.tasks.saliency_routes import add_saliency_routes

        add_saliency_routes(app, settings, dependencies)

    def evaluate(self, predictor, dataset, limit, progress, **options):
        """MAE and max F-measure (lbdeploy.evaluation.saliency_eval)."""
        from lbdeploy.evaluation.saliency_eval import evaluate_saliency

        return evaluate_saliency(dataset, predictor.predict_batch, predictor.input_size, limit=limit, progress=progress)

    def format_reports(self, reports: dict) -> str:
        """The MAE / max-F table."""
        from lbdeploy.evaluation.saliency import format_saliency_reports

        return format_saliency_reports(reports)


RUNTIME = SaliencyRuntime()
