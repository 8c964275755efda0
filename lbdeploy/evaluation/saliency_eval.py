"""Evaluate a saliency model on a dataset split: a probability map per image, then MAE and max-F.

`evaluate_saliency(dataset, predict, limit)` is backend-agnostic: `predict` is any function from a
batch of RGB images [N, H, W, 3] uint8 (all resized to the model input) to probability maps
[N, h, w] in [0, 1]; each map is resized (bilinear) to its image's original size and compared with
the mask there, as saliency benchmarks do. `torch_predictor(model, ...)` is that function for an
in-memory torch model (used by the trainer's validation); `lbdeploy eval` passes
runtime.tasks.saliency.SaliencyPredictor.predict_batch, which runs a model.pt or an exported artifact on
any backend the same way.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from lbdeploy.data.saliency import SaliencyDataset, resize_image, resize_probabilities
from lbdeploy.evaluation.saliency import SaliencyMeter, SaliencyReport

Predict = Callable[[np.ndarray], np.ndarray]


def torch_predictor(model, input_size, mean, std, device=None) -> Predict:
    """A `Predict` running a saliency model (eval mode; sigmoid of its final output).

    Args:
        model: returns a list of logit maps [N, 1, H, W] (the last is the final one).
        input_size: model input (width, height); mean, std: input normalization.
        device: torch device of the model (default: the device of its first parameter).
    """
    import torch

    from lbdeploy.transforms import normalize

    device = device or next(model.parameters()).device

    def predict(batch: np.ndarray) -> np.ndarray:
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            logits = model(torch.from_numpy(normalize(batch, {"mean": list(mean), "std": list(std)})).to(device))[-1]
        model.train(was_training)
        return torch.sigmoid(logits.float())[:, 0].cpu().numpy()

    return predict


def evaluate_saliency(dataset: SaliencyDataset, predict: Predict, input_size, limit: int | None = None,
                      batch_size: int = 16, progress: bool = False) -> SaliencyReport:
    """MAE and max F-measure of `predict` on the first `limit` images of `dataset`.

    Args:
        predict: batch of images [N, H, W, 3] uint8 at `input_size` -> probabilities [N, h, w].
        input_size: model input (width, height).
    """
    from tqdm import tqdm

    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    meter = SaliencyMeter()
    for start in tqdm(range(0, count, batch_size), desc=f"eval {dataset.name}", disable=not progress, leave=False):
        samples = [dataset.load(i) for i in range(start, min(start + batch_size, count))]
        probs = predict(np.stack([resize_image(image, tuple(input_size)) for image, _ in samples]))
        for prob, (_, mask) in zip(probs, samples):
            meter.update(resize_probabilities(prob, mask.shape), mask)
    return meter.report()
