"""Evaluate a saliency model on a dataset split: a probability map per image, then MAE and max-F.

`evaluate_saliency(dataset, predict, limit)` is backend-agnostic: `predict` is any function from a
batch of RGB images [N, H, W, 3] uint8 (all resized to the model input) to probability maps
[N, h, w] in [0, 1]; each map is resized (bilinear) to its image's original size and compared with
the mask there, as saliency benchmarks do. `torch_predictor(model, ...)` is that function for an
in-memory torch model (used by the trainer's validation and `lbdeploy eval` with torch); an
exported artifact's runtime plugs in the same way.
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


def evaluate_saliency_sources(sources, dataset: SaliencyDataset, backend: str = "auto", compare: str | None = None,
                              limit: int | None = None, progress: bool = False) -> tuple[dict, dict]:
    """`lbdeploy eval` for saliency: one SaliencyReport per (source, backend) column.

    Saliency models run on the torch backend (a model.pt); exported artifacts and the other backends
    are reported as skipped under --compare (an error otherwise) until the saliency runtime lands.

    Returns:
        (label -> SaliencyReport, label -> reason skipped)
    Raises:
        ConfigError: a source or backend that cannot run (without --compare), or nothing ran.
    """
    from pathlib import Path

    from lbdeploy.checkpoint import load_model
    from lbdeploy.errors import ConfigError

    names = [b.strip() for b in compare.split(",") if b.strip()] if compare else [backend]
    reports, skipped = {}, {}
    for path in sources:
        for name in names:
            name = "torch" if name == "auto" else name
            label = name if len(sources) == 1 else f"{name}:{Path(path).name}"
            if name != "torch" or not Path(path).is_file():
                reason = (f"saliency models are evaluated on torch from a model.pt; {name} on {path} needs the "
                          "saliency runtime (export wiring)")
                if not compare:
                    raise ConfigError(reason)
                skipped[label] = reason
                continue
            model, ckpt = load_model(path)
            if ckpt.metadata.get("task") != "saliency":
                raise ConfigError(f"{path} is a {ckpt.metadata.get('task', 'pose')} model, not a saliency model; "
                                  "evaluate it on a pose dataset")
            height, width = (int(v) for v in ckpt.metadata["input_size"])
            predict = torch_predictor(model, (width, height), ckpt.metadata["mean"], ckpt.metadata["std"])
            reports[label] = evaluate_saliency(
                dataset, predict, (width, height), limit=limit, progress=progress)
    if not reports:
        raise ConfigError("no backend could run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return reports, skipped
