"""The runtime task registry: one record per task (lbdeploy.tasks names the same tasks in the core).

A runtime record (`RuntimeTask`, one module each: runtime/tasks/pose.py, saliency.py,
classification.py) owns the task's predictor, its result's JSON and drawings for `lbdeploy infer`,
its server endpoints and its evaluation for `lbdeploy eval`. The CLI, the server and the eval
command ask the record of the model's task instead of branching on it.

To add a task: its core record (lbdeploy/tasks/), its runtime module here with a `RuntimeTask`
subclass instance named RUNTIME, one line in `_runtimes()` (docs/architecture.md).
"""

from __future__ import annotations

from lbdeploy.errors import ConfigError, InputError
from lbdeploy.runtime.loading import PredictorRecipe, model_task
from lbdeploy.runtime.tasks import classification, pose, saliency
from lbdeploy.runtime.tasks.base import RuntimeTask, TaskPredictor


def _runtimes() -> list[RuntimeTask]:
    return [pose.RUNTIME, saliency.RUNTIME, classification.RUNTIME]


RUNTIME_TASKS: dict[str, RuntimeTask] = {record.task.name: record for record in _runtimes()}


def runtime_task(name: str | None) -> RuntimeTask:
    """The runtime record of task `name` (None: pose).

    Raises:
        ConfigError: a task this runtime has no record for.
    """
    name = name or "pose"
    if name not in RUNTIME_TASKS:
        raise ConfigError(f"this lbdeploy runs {', '.join(RUNTIME_TASKS)} models, not {name!r}: upgrade lbdeploy")
    return RUNTIME_TASKS[name]


def task_of_source(artifact_or_model_pt) -> RuntimeTask:
    """The runtime record of the task of an artifact folder or model.pt (read without running it)."""
    return runtime_task(model_task(artifact_or_model_pt))


def open_predictor(artifact_or_model_pt, **options) -> TaskPredictor:
    """The predictor of the model's own task, built with the options that task takes (others are dropped).

    Raises:
        as the task's predictor (ArtifactError, ConfigError, BackendUnavailable, ...).
    """
    record = task_of_source(artifact_or_model_pt)
    return record.predictor_class(artifact_or_model_pt, **record.predictor_kwargs(**options))


class PredictorOfTask(PredictorRecipe):
    """A picklable recipe for the predictor of a model's own task (servers build it once per process or
    Ray replica); the options are `open_predictor`'s."""

    def __call__(self):
        """Build the predictor."""
        return open_predictor(self.source, **self.kwargs)


class WrongTask(InputError):
    """The served model does not do what the endpoint asks (HTTP 404; the message names the right one)."""

    http_status = 404


def require_task(predictor, task: str, endpoint: str) -> None:
    """Refuse `endpoint` unless the served model's task is `task`.

    Raises:
        WrongTask: naming the endpoint that serves the model's task.
    """
    served = predictor.task.name
    if served != task:
        record = RUNTIME_TASKS.get(served)
        hint = f"; POST the image to {record.endpoints[0]}" if record and record.endpoints else ""
        raise WrongTask(f"{endpoint} serves {task} models and this server serves a {served} model{hint}")


__all__ = ["PredictorOfTask", "RUNTIME_TASKS", "RuntimeTask", "TaskPredictor", "WrongTask", "open_predictor", "require_task",
           "runtime_task", "task_of_source"]
