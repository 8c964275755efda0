"""Evaluate a pose model on a dataset split: predictions for every record, then PCK / PCKh.

Two ways to predict, one crop geometry (the record's center/scale, no augmentation):

- `predict_with_predictor`: any backend through runtime.predictor.Predictor (a model.pt with the
  torch backend, or an exported artifact with ORT / TVM / TensorRT) -- what `lbdeploy eval` uses;
- `predict_with_model`: an in-memory torch model, batched on the training device -- what the
  trainer uses for per-epoch validation.

`evaluate` turns predictions into a PCKReport with the dataset's metric (PCKh@0.5 for MPII and the
synthetic set, PCK@0.2 with the torso for LSP) unless a threshold or norm is given.
"""

from __future__ import annotations

import time

import numpy as np

from lbdeploy.data.augment import crop_matrix_for
from lbdeploy.data.records import PoseDataset
from lbdeploy.evaluation.pck import PCKReport, normalized_distances, pck_report, reference_length
from lbdeploy.pose.affine import apply_affine, invert_affine
from lbdeploy.pose.decode import average_flip, decode_heatmaps, heatmap_to_input


def _count(dataset: PoseDataset, limit: int | None) -> int:
    return len(dataset) if limit is None else min(int(limit), len(dataset))


def ground_truth(dataset: PoseDataset, limit: int | None = None, norm: str | None = None):
    """Truth [N, J, 2], visibility [N, J] and reference lengths [N] of the first `limit` records."""
    records = [dataset.record(i) for i in range(_count(dataset, limit))]
    norm = norm or dataset.norm
    truth = np.stack([r.joints for r in records])
    visible = np.stack([r.visible for r in records])
    lengths = np.array([reference_length(r, norm, dataset.joint_set) for r in records])
    return truth, visible, lengths


def predict_with_predictor(predictor, dataset: PoseDataset, flip: bool = False, limit: int | None = None,
                           progress: bool = False) -> np.ndarray:
    """Keypoints [N, J, 2] in image pixels from a runtime Predictor, one record at a time."""
    from tqdm import tqdm

    indices = tqdm(range(_count(dataset, limit)), desc=f"eval {dataset.name}", disable=not progress, leave=False)
    return np.stack([_predict_record(predictor, dataset, i, flip) for i in indices])


def _predict_record(predictor, dataset: PoseDataset, index: int, flip: bool) -> np.ndarray:
    """Keypoints [J, 2] of record `index`: read the record and its image, predict in its crop."""
    record = dataset.record(index)
    result = predictor.predict(dataset.load_image(record),
                               center_scale=[(record.center[0], record.center[1], record.scale)], flip=flip)
    return result.keypoints[0]


def seconds_per_person(predictor, dataset: PoseDataset, flip: bool = False) -> float:
    """Wall-clock seconds `predict_with_predictor` takes per person (reading the image included):
    the first record, timed after one untimed warm-up call (first runs allocate and are slower)."""
    _predict_record(predictor, dataset, 0, flip)
    started = time.perf_counter()
    _predict_record(predictor, dataset, 0, flip)
    return time.perf_counter() - started


def predict_with_model(model, dataset: PoseDataset, input_size, mean, std, stride: int = 4, batch_size: int = 16,
                       flip: bool = False, limit: int | None = None, device=None) -> np.ndarray:
    """Keypoints [N, J, 2] in image pixels from a torch pose model (eval mode, batched).

    Args:
        model: returns a list of heatmaps per stack (the last is decoded).
        input_size: model input (width, height); mean, std: input normalization.
        stride: input pixels per heatmap pixel; flip: also run mirrored crops and average.
        device: torch device of the model (default: the device of its first parameter).
    """
    import torch

    from lbdeploy.transforms import crop

    device = device or next(model.parameters()).device
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    pairs = dataset.joint_set.flip_pairs
    was_training = model.training
    model.eval()
    out = []
    count = _count(dataset, limit)
    with torch.inference_mode():
        for start in range(0, count, batch_size):
            records = [dataset.record(i) for i in range(start, min(start + batch_size, count))]
            matrices = [crop_matrix_for(r, input_size) for r in records]
            crops = np.stack([crop(dataset.load_image(r), m, input_size) for r, m in zip(records, matrices)])
            batch = ((crops.astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2)
            if flip:
                batch = np.concatenate([batch, batch[..., ::-1]])
            heatmaps = model(torch.from_numpy(np.ascontiguousarray(batch)).to(device))[-1].float().cpu().numpy()
            if flip:
                heatmaps = average_flip(heatmaps[:len(records)], heatmaps[len(records):], pairs, stride)
            coords, _ = decode_heatmaps(heatmaps)
            xy = heatmap_to_input(coords, stride)
            out += [apply_affine(p, invert_affine(m)) for p, m in zip(xy, matrices)]
    model.train(was_training)
    return np.stack(out)


def evaluate(dataset: PoseDataset, predictions: np.ndarray, threshold: float | None = None,
             norm: str | None = None) -> PCKReport:
    """PCK report of `predictions` (for the first len(predictions) records of `dataset`).

    Args:
        threshold: PCK threshold (default: the dataset's, 0.5 MPII / 0.2 LSP).
        norm: "head" or "torso" (default: the dataset's).
    """
    norm = norm or dataset.norm
    threshold = dataset.threshold if threshold is None else float(threshold)
    truth, visible, lengths = ground_truth(dataset, len(predictions), norm)
    scaled = normalized_distances(predictions, truth, visible, lengths)
    return pck_report(scaled, dataset.joint_set, threshold, norm)
