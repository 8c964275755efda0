"""What `train` needs to know about a task: build the model, its training samples, loss and validation.

The trainer (trainer.py) is one loop for every task; a `TrainingTask` supplies the task-specific
parts. The task is chosen by the dataset (`task_for`): pose datasets (lbdeploy.data PoseDataset)
train hourglass presets with heatmaps, saliency datasets (SaliencyDataset) train CPD presets.
To add a task, write a TrainingTask subclass and add it to `task_for`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from lbdeploy.errors import ConfigError

HEATMAP_STRIDE = 4


class TrainingTask(ABC):
    """Task-specific parts of training.

    Attributes:
        metric: key of the validation score in the epoch log (higher is better; picks best.pt).
        preset_key: a config key every preset of this task has (to refuse other presets).
    """

    metric = ""
    preset_key = ""
    kind = ""

    def __init__(self, config, train_data):
        self.config, self.train_data = config, train_data

    def model_overrides(self) -> dict:
        """Config keys the dataset imposes on the model (e.g. the joint count)."""
        return {}

    def build(self):
        """The model to train, seeded by the run's seed."""
        from lbdeploy.models import build_model, get_preset

        if self.preset_key not in get_preset(self.config.arch).config:
            raise ConfigError(f"{self.config.arch} is not a {self.kind} model and cannot train on "
                              f"{self.train_data.describe()}; choose a {self.kind} preset (`lbdeploy models`)")
        torch.manual_seed(self.config.seed)
        return build_model(self.config.arch, **{**self.config.model_options, **self.model_overrides(),
                                                "seed": self.config.seed})

    @abstractmethod
    def training_set(self, metadata: dict, input_size: tuple[int, int]) -> torch.utils.data.Dataset:
        """The torch Dataset of (image, *targets) training samples at `input_size` (width, height)."""

    @abstractmethod
    def loss(self, outputs, *targets) -> torch.Tensor:
        """The training loss of a batch."""

    @abstractmethod
    def validate(self, model, val_data, metadata: dict, input_size) -> dict:
        """Validation figures of `model` ({metric: score, ...})."""

    def describe(self) -> str:
        """Task settings for the run's first log line."""
        return ""

    @abstractmethod
    def metric_name(self, val_data) -> str:
        """The validation metric as recorded in checkpoint metadata (training.metric)."""

    @abstractmethod
    def score_text(self, val_data, entry: dict) -> str:
        """The validation figures of an epoch-log entry, for the epoch's log line."""


class PoseTask(TrainingTask):
    """Pose: heatmap targets (Gaussian, sigma scaled from 1 at 64x64), MSE on every stack, PCK(h)."""

    metric = "pck"
    preset_key = "joints"
    kind = "pose"

    def model_overrides(self) -> dict:
        return {"joints": len(self.train_data.joint_set.joints)}

    def _sigma(self, input_size) -> float:
        from lbdeploy.data.heatmaps import sigma_for

        return self.config.sigma or sigma_for(input_size[1] // HEATMAP_STRIDE)

    def training_set(self, metadata, input_size):
        from lbdeploy.training.pose_dataset import PoseTrainingSet

        self.sigma = self._sigma(input_size)
        return PoseTrainingSet(self.train_data, input_size, HEATMAP_STRIDE, self.sigma, metadata["mean"],
                               metadata["std"], self.config.augment, self.config.seed)

    def loss(self, outputs, *targets):
        from lbdeploy.training.losses import heatmap_loss

        return heatmap_loss(outputs, *targets)

    def validate(self, model, val_data, metadata, input_size):
        from lbdeploy.evaluation.evaluate import evaluate, predict_with_model

        predictions = predict_with_model(model, val_data, input_size, metadata["mean"], metadata["std"],
                                         HEATMAP_STRIDE, limit=self.config.val_limit)
        return {"pck": round(evaluate(val_data, predictions).total, 3)}

    def describe(self) -> str:
        return f", sigma {self.sigma:g}"

    def metric_name(self, val_data) -> str:
        return f"{val_data.metric}@{val_data.threshold:g}"

    def score_text(self, val_data, entry):
        pck = "n/a" if entry.get("pck") is None else f"{entry['pck']:.2f}"
        return f"val {val_data.metric}@{val_data.threshold:g} {pck}"


class SaliencyTask(TrainingTask):
    """Saliency: the whole image resized to the input, CPD's BCE on both decoder maps, max-F and MAE."""

    metric = "max_f"
    preset_key = "backbone"
    kind = "saliency"

    def training_set(self, metadata, input_size):
        from lbdeploy.training.saliency_dataset import SaliencyTrainingSet

        return SaliencyTrainingSet(self.train_data, input_size, metadata["mean"], metadata["std"],
                                   self.config.augment, self.config.seed)

    def loss(self, outputs, *targets):
        from lbdeploy.training.losses import saliency_loss

        return saliency_loss(outputs, *targets)

    def validate(self, model, val_data, metadata, input_size):
        from lbdeploy.evaluation.saliency_eval import evaluate_saliency, torch_predictor

        predict = torch_predictor(model, input_size, metadata["mean"], metadata["std"])
        report = evaluate_saliency(val_data, predict, input_size, limit=self.config.val_limit)
        return {"max_f": round(report.max_f, 4), "mae": round(report.mae, 4)}

    def metric_name(self, val_data) -> str:
        return "maxF (beta^2 = 0.3), MAE"

    def score_text(self, val_data, entry):
        if entry.get("max_f") is None:
            return "val n/a"
        return f"val maxF {entry['max_f']:.4f} MAE {entry['mae']:.4f}"


def task_for(config, train_data) -> TrainingTask:
    """The TrainingTask of a dataset (pose or saliency)."""
    from lbdeploy.data.saliency import SaliencyDataset

    return (SaliencyTask if isinstance(train_data, SaliencyDataset) else PoseTask)(config, train_data)
