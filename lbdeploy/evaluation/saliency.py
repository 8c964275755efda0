"""Saliency metrics of the paper's Table 10: MAE and max F-measure (beta^2 = 0.3).

Backend-agnostic: they take predicted saliency maps (probabilities in [0, 1], any source) and the
binary ground-truth masks, image by image, through a `SaliencyMeter`:

- MAE: the mean absolute difference between the map and the mask over an image's pixels, averaged
  over images;
- max F-measure: the map is quantized to 256 levels and binarized at every threshold t = 0..255
  (salient where level >= t); precision and recall of each image at each threshold are averaged
  over images, F_beta = (1 + beta^2) P R / (beta^2 P + R) per threshold, and the maximum over
  thresholds is reported (the convention of CPD's and most saliency benchmarks' evaluation code).

An image without salient pixels has recall 0 at every threshold (precision as usual).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lbdeploy.errors import ConfigError

BETA2 = 0.3
LEVELS = 256


@dataclass
class SaliencyReport:
    """MAE and max F-measure of one model on one dataset.

    Attributes:
        mae: mean absolute error; max_f: maximum over thresholds of the mean-P/R F-measure;
        best_threshold: the threshold (0..255) where max_f is reached; images: images evaluated.
    """

    mae: float
    max_f: float
    best_threshold: int
    images: int

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {"mae": round(self.mae, 5), "max_f": round(self.max_f, 5), "best_threshold": self.best_threshold,
                "images": self.images}


class SaliencyMeter:
    """Accumulates MAE and per-threshold precision / recall over images; `report()` at the end."""

    def __init__(self):
        self.abs_error = 0.0
        self.precision = np.zeros(LEVELS)
        self.recall = np.zeros(LEVELS)
        self.images = 0

    def update(self, prediction: np.ndarray, mask: np.ndarray) -> None:
        """Add one image: `prediction` [H, W] in [0, 1], `mask` [H, W] bool (or 0/1) of the same size.

        Raises:
            ConfigError: shapes differ or the prediction leaves [0, 1].
        """
        prediction = np.asarray(prediction, dtype=np.float64)
        mask = np.asarray(mask).astype(bool)
        if prediction.shape != mask.shape or prediction.ndim != 2:
            raise ConfigError(f"prediction {prediction.shape} and mask {mask.shape} must be the same [H, W]")
        if prediction.size and (prediction.min() < 0.0 or prediction.max() > 1.0):
            raise ConfigError("saliency predictions must be probabilities in [0, 1] (apply the sigmoid first)")
        self.abs_error += float(np.abs(prediction - mask).mean())
        levels = np.clip(np.round(prediction * (LEVELS - 1)), 0, LEVELS - 1).astype(np.int64)
        # tp[t] / fp[t]: salient / background pixels whose level is >= t (reverse cumulative histograms).
        tp = np.bincount(levels[mask], minlength=LEVELS)[::-1].cumsum()[::-1]
        fp = np.bincount(levels[~mask], minlength=LEVELS)[::-1].cumsum()[::-1]
        predicted = tp + fp
        self.precision += np.divide(tp, predicted, out=np.zeros(LEVELS), where=predicted > 0)
        positives = int(mask.sum())
        self.recall += tp / positives if positives else 0.0
        self.images += 1

    def report(self) -> SaliencyReport:
        """The MAE and max F-measure of every image added.

        Raises:
            ConfigError: no image was added.
        """
        if not self.images:
            raise ConfigError("no images were evaluated")
        precision, recall = self.precision / self.images, self.recall / self.images
        denominator = BETA2 * precision + recall
        f = np.divide((1 + BETA2) * precision * recall, denominator, out=np.zeros(LEVELS), where=denominator > 0)
        best = int(np.argmax(f))
        return SaliencyReport(self.abs_error / self.images, float(f[best]), best, self.images)


def saliency_report(predictions, masks) -> SaliencyReport:
    """MAE and max F-measure of paired predictions and masks (iterables of [H, W] arrays)."""
    meter = SaliencyMeter()
    for prediction, mask in zip(predictions, masks, strict=True):
        meter.update(prediction, mask)
    return meter.report()


def format_saliency_reports(reports: dict) -> str:
    """Side-by-side table of SaliencyReports (column label -> report)."""
    labels = list(reports)
    width = max(10, *(len(label) + 2 for label in labels))
    rows = ["".ljust(10) + "".join(label.rjust(width) for label in labels)]
    rows.append("maxF".ljust(10) + "".join(f"{reports[l].max_f:.4f}".rjust(width) for l in labels))
    rows.append("MAE".ljust(10) + "".join(f"{reports[l].mae:.4f}".rjust(width) for l in labels))
    rows.append(f"({reports[labels[0]].images} images, F-measure beta^2 = {BETA2})")
    return "\n".join(rows)
