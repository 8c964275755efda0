"""The classification task at run time (the paper's CIFAR ResNet-56 / ResNet-LBB-56): the
ClassificationPredictor (image in, class probabilities out, on any backend), its result with the
top-k classes, their JSON, a labelled picture, POST /v1/classify
(runtime/tasks/classification_routes.py) and top-1 / top-5 evaluation.

    from lbdeploy.runtime.predictor import open_predictor
    predictor = open_predictor("cifar-out/")          # a classification artifact (or model.pt)
    result = predictor.predict("photo.jpg")
    result.top(5)  # [(class index, label, probability)], most likely first

Pipeline: the whole image resized (bilinear) to the model input (32x32 for the CIFAR presets),
normalized per the manifest, one backend call, softmax of the logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lbdeploy.data.saliency import resize_image
from lbdeploy.tasks import get_task
from lbdeploy.tasks.classification import class_labels
from lbdeploy.transforms import DEFAULT_MAX_PIXELS, load_image, normalize
from lbdeploy.runtime.tasks.base import RuntimeTask, TaskPredictor

TOP_K = 5
_TEXT_COLOR = (255, 255, 0)
_SCALE_TO = 256  # the picture of a 32x32 image is enlarged to this height so its labels are legible


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of logits [N, classes], in float64 and stable for any magnitude."""
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass
class ClassificationResult:
    """The class probabilities of one image.

    Attributes:
        probabilities: [classes] float32, summing to 1. labels: the name of each class.
        image_size: (width, height) of the input image.
    """

    probabilities: np.ndarray
    labels: list[str]
    image_size: tuple[int, int]

    def top(self, k: int = TOP_K) -> list[tuple[int, str, float]]:
        """The `k` most likely classes as (index, label, probability), most likely first."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(int(i), self.labels[i], float(self.probabilities[i])) for i in order]


class ClassificationPredictor(TaskPredictor):
    """Image classification on a classification artifact folder or model.pt (task "classification").

    Args: as runtime.tasks.base.TaskPredictor.
    """

    task = get_task("classification")

    def __init__(self, artifact_or_model_pt, backend: str = "auto", threads: int | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, **backend_opts):
        super().__init__(artifact_or_model_pt, backend, threads, max_pixels, **backend_opts)
        classes = int(self.manifest["outputs"][-1]["shape"][1])
        section = self.manifest.get("classification", {})
        self.labels = list(section.get("labels") or class_labels(classes, {}))

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities [N, classes] float32 of images [N, h, w, 3] uint8 at the model input size."""
        return softmax(self.run_final(normalize(images, self.manifest["input"]))).astype(np.float32)

    def predict(self, image) -> ClassificationResult:
        """The class probabilities of one image (a path, encoded bytes or an HxWx3 uint8 RGB array).

        Raises:
            InputError: an unreadable or too large image.
        """
        pixels = load_image(image, self.max_pixels)
        probabilities = self.predict_batch(resize_image(pixels, self.input_size)[None])[0]
        return ClassificationResult(probabilities, self.labels, (int(pixels.shape[1]), int(pixels.shape[0])))


def classification_to_json(result: ClassificationResult, image_id=None, top_k: int = TOP_K) -> dict:
    """{"image_id", "width", "height", "top": [{"class", "label", "probability"}] (most likely first)}."""
    width, height = result.image_size
    return {"image_id": image_id, "width": width, "height": height,
            "top": [{"class": index, "label": label, "probability": round(p, 6)} for index, label, p in result.top(top_k)]}


def draw_classes(image: np.ndarray, result: ClassificationResult, k: int = 3) -> Image.Image:
    """The image (enlarged when small) with its `k` most likely classes written in the corner."""
    canvas = Image.fromarray(image).convert("RGB")
    if canvas.height < _SCALE_TO:
        canvas = canvas.resize((round(canvas.width * _SCALE_TO / canvas.height), _SCALE_TO), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for row, (_, label, probability) in enumerate(result.top(k)):
        draw.text((4, 4 + 12 * row), f"{label} {probability:.1%}", fill=_TEXT_COLOR)
    return canvas


class ClassificationRuntime(RuntimeTask):
    """The classification task's runtime record: top-k JSON, labelled pictures, POST /v1/classify,
    top-1 / top-5 accuracy."""

    task = get_task("classification")
    predictor_class = ClassificationPredictor
    metric = "top-1 and top-5 accuracy"
    endpoints = ("/v1/classify",)

    def to_json(self, predictor, result, image_id=None) -> dict:
        """classification_to_json (the top five classes)."""
        return classification_to_json(result, image_id=image_id)

    def drawings(self, pixels, result, predictor, draw: str, image: Path, folder: bool) -> list:
        """The labelled picture at `draw`, or `<draw>/<image stem>.classes.png` in a folder."""
        target = Path(draw) / f"{image.stem}.classes.png" if folder else Path(draw)
        return [(target, draw_classes(pixels, result), "top classes")]

    def add_routes(self, app, settings, dependencies: list) -> None:
        """POST /v1/classify."""
        from lbdeploy.runtime.tasks.classification_routes import add_classification_routes

        add_classification_routes(app, settings, dependencies)

    def evaluate(self, predictor, dataset, limit, progress, **options):
        """Top-1 and top-5 accuracy (lbdeploy.evaluation.classification)."""
        from lbdeploy.evaluation.classification import evaluate_classification

        return evaluate_classification(dataset, predictor.predict_batch, predictor.input_size, limit=limit,
                                       progress=progress)

    def format_reports(self, reports: dict) -> str:
        """The accuracy table."""
        from lbdeploy.evaluation.classification import format_classification_reports

        return format_classification_reports(reports)


RUNTIME = ClassificationRuntime()
