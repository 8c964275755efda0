"""What every task's runtime shares: the predictor base class and the runtime task record.

`TaskPredictor` opens a model source (an artifact folder, verified, or a model.pt) with its
backend (runtime.loading), refuses a model of another task, reads the input spec and runs
batches no larger than the model takes. A task's predictor subclasses it and adds `predict`.

`RuntimeTask` is a task's runtime record (lbdeploy.runtime.tasks): its core record
(lbdeploy.tasks), predictor class, result JSON and drawings for `lbdeploy infer`, server routes
and evaluation. Subclasses override what the task has.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from pathlib import Path

import numpy as np

from lbdeploy.artifact import final_output
from lbdeploy.errors import ConfigError
from lbdeploy.tasks import Task
from lbdeploy.transforms import DEFAULT_MAX_PIXELS
from lbdeploy.runtime.loading import load_model_source


class TaskPredictor:
    """The shared part of every task's predictor.

    Args:
        artifact_or_model_pt: artifact folder written by `lbdeploy export`, or a model.pt checkpoint.
        backend: "auto" (the artifact's own backend; "torch" for a model.pt) or a name of lbdeploy.backends.
        threads: intra-op threads for the backend (None: its default).
        max_pixels: images with more pixels are refused with InputError.
        **backend_opts: passed to the backend constructor.

    Raises:
        ArtifactError: a missing, unknown or modified artifact; ConfigError: a model of another task
        or a wrong backend; BackendUnavailable / KernelLibraryError: the backend cannot run here.
    """

    task: Task  # the core record of the task this predictor runs (set by each subclass)

    def __init__(self, artifact_or_model_pt, backend: str = "auto", threads: int | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, **backend_opts):
        source, self.manifest, self.backend = load_model_source(artifact_or_model_pt, backend, threads, **backend_opts)
        served = self.manifest.get("task", "pose")
        if served == self.task.name and self.task.section_required and self.task.section not in self.manifest:
            raise ConfigError(f"{source} is a {served} model without the manifest's {self.task.section!r} section; "
                              "re-export it with `lbdeploy export`")
        if served != self.task.name:
            from lbdeploy.runtime.tasks import RUNTIME_TASKS

            other = RUNTIME_TASKS.get(served)
            hint = f"{other.predictor_class.__name__} runs {served} models; " if other else ""
            raise ConfigError(f"{source} is a {served!r} model; {type(self).__name__} runs {self.task.name} models "
                              f"({hint}lbdeploy.runtime.predictor.open_predictor picks the one of a model's task)")
        self.source = source
        self.max_pixels = int(max_pixels)
        spec = self.manifest["input"]
        self.input_name = spec["name"]
        batch, _, height, width = spec["shape"]
        self.input_size = (int(width), int(height))
        self.max_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.output_name = final_output(self.manifest)["name"]

    def run_final(self, batch: np.ndarray) -> np.ndarray:
        """The final output of a normalized NCHW batch, run in chunks the model accepts (float32)."""
        step = self.max_batch or len(batch)
        chunks = [self.backend.run({self.input_name: batch[i:i + step]})[self.output_name]
                  for i in range(0, len(batch), step)]
        return np.concatenate(chunks).astype(np.float32, copy=False)


class RuntimeTask(ABC):
    """A task's runtime record.

    Attributes:
        task: the core record (lbdeploy.tasks). predictor_class: its TaskPredictor subclass.
        endpoints: the server paths it adds (the first is where its images are posted).
        metric: what `evaluate` reports, in words.
        options: predictor options beyond backend, threads and max_pixels (e.g. the pose detector's).
        infer_options: the `lbdeploy infer` options that apply, by parameter name (others are refused
            for its models when given); "video": it runs on videos and cameras too.
        eval_options: the `lbdeploy eval` options that apply.
    """

    task: Task
    predictor_class: type
    endpoints: tuple[str, ...] = ()
    metric: str = ""
    options: tuple[str, ...] = ()
    infer_options: tuple[str, ...] = ()
    eval_options: tuple[str, ...] = ()

    def predictor_kwargs(self, **given) -> dict:
        """The predictor options among `given`: backend, threads, max_pixels and this task's `options`."""
        keep = ("backend", "threads", "max_pixels", *self.options)
        return {key: value for key, value in given.items() if key in keep}

    def model_fields(self, predictor) -> dict:
        """What GET /v1/model adds to the manifest summary for this task (e.g. joint names)."""
        return {}

    def seconds_per_item(self, predictor, dataset, **options) -> float | None:
        """Seconds one evaluated item takes, for the estimate `lbdeploy eval` prints (None: none)."""
        return None

    @abstractmethod
    def to_json(self, predictor, result, image_id=None) -> dict:
        """The JSON of one image's result (`lbdeploy infer`, the server)."""
        ...

    def document(self, predictor, images: list[dict]) -> dict:
        """The JSON `lbdeploy infer` prints for several images."""
        return {"model": predictor.manifest.get("arch"), "task": self.task.name, "images": images}

    def count(self, images: list[dict]) -> str:
        """What a written JSON holds, for the CLI's message (e.g. "3 images")."""
        return f"{len(images)} image{'s' if len(images) != 1 else ''}"

    def notice(self, result, image: Path, detector: str) -> str | None:
        """A line for the user about one image's result (e.g. nobody found), or None."""
        return None

    @abstractmethod
    def drawings(self, pixels: np.ndarray, result, predictor, draw: str, image: Path, folder: bool) -> list:
        """[(path, Pillow image, what)] that `--draw draw` writes for `image` (`draw` a folder when `folder`)."""
        ...

    @abstractmethod
    def add_routes(self, app, settings, dependencies: list) -> None:
        """Add the task's endpoints to the server's FastAPI app (runtime.server.create_app)."""
        ...

    @abstractmethod
    def evaluate(self, predictor, dataset, limit: int | None, progress: bool, **options):
        """The task's metric report of `predictor` on `dataset` (`lbdeploy eval`)."""
        ...

    @abstractmethod
    def format_reports(self, reports: dict) -> str:
        """The `lbdeploy eval` table of column label -> report."""
        ...

