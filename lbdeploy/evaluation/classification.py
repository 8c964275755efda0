"""Classification metrics: top-1 and top-5 accuracy over a dataset, backend-agnostic.

`evaluate_classification(dataset, predict, input_size, limit)` takes any function from a batch of
RGB images [N, H, W, 3] uint8 (resized to the model input) to class probabilities [N, classes]
(runtime.tasks.classification.ClassificationPredictor.predict_batch runs a model.pt or an
artifact on any backend) and counts the images whose class is the top one, or among the top five.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from lbdeploy.data.saliency import resize_image

TOP_K = 5


@dataclass
class ClassificationReport:
    """Accuracy of one model on one dataset: top-1 and top-5 (percent) over `images` images."""

    top1: float
    top5: float
    images: int

    def to_dict(self) -> dict:
        """The JSON form (`lbdeploy eval --json`)."""
        return asdict(self)


def evaluate_classification(dataset, predict: Callable[[np.ndarray], np.ndarray], input_size,
                            limit: int | None = None, batch_size: int = 64, progress: bool = False) -> ClassificationReport:
    """Top-1 and top-5 accuracy of `predict` on the first `limit` images of `dataset`.

    Args:
        predict: images [N, h, w, 3] uint8 at `input_size` (width, height) -> probabilities [N, classes].
    """
    from tqdm import tqdm

    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    top1 = top5 = 0
    for start in tqdm(range(0, count, batch_size), desc=f"eval {dataset.name}", disable=not progress, leave=False):
        samples = [dataset.load(i) for i in range(start, min(start + batch_size, count))]
        probabilities = predict(np.stack([resize_image(image, tuple(input_size)) for image, _ in samples]))
        ranked = np.argsort(-probabilities, axis=1)
        labels = np.array([label for _, label in samples])
        top1 += int((ranked[:, 0] == labels).sum())
        top5 += int((ranked[:, :TOP_K] == labels[:, None]).any(axis=1).sum())
    return ClassificationReport(100.0 * top1 / max(count, 1), 100.0 * top5 / max(count, 1), count)


def format_classification_reports(reports: dict) -> str:
    """A table of column label -> ClassificationReport."""
    lines = [f"{'':<16}{'top-1 %':>9}{'top-5 %':>9}{'images':>8}"]
    lines += [f"{label[:15]:<16}{r.top1:>9.2f}{r.top5:>9.2f}{r.images:>8}" for label, r in reports.items()]
    return "\n".join(lines)
