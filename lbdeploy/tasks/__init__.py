"""The task registry: one record per task a model does (pose, saliency, classification).

A task record (a `Task` subclass, one module each) owns what the core knows of the task:

- the manifest: its output names, the output shapes of a checkpoint, the task's own manifest
  section (`pose`, `saliency`, `classification`) and that section's schema check;
- the agreement rules of the exporters' gates on the final output: the parity gate (an export
  against PyTorch float64), the int8 accuracy gate and the TensorRT precision gate.

The runtime parts of a task (predictor, result type and its JSON and drawing, server routes,
evaluation) are the task's record in lbdeploy.runtime.tasks, which points at this one. To add a
task: a module here with a `Task` subclass, one line in `_tasks()`, and its runtime module
(docs/architecture.md, "Adding a task").
"""

from __future__ import annotations

from lbdeploy.errors import ConfigError
from lbdeploy.tasks.base import Agreement, Task
from lbdeploy.tasks.classification import ClassificationTask
from lbdeploy.tasks.pose import PoseTask
from lbdeploy.tasks.saliency import SaliencyTask

DEFAULT_TASK = "pose"  # manifests and checkpoints written before the task field existed


def _tasks() -> list[Task]:
    return [PoseTask(), SaliencyTask(), ClassificationTask()]


TASKS: dict[str, Task] = {task.name: task for task in _tasks()}


def get_task(name: str | None) -> Task:
    """The record of task `name` (None: the default, pose).

    Raises:
        ConfigError: an unknown task (the message lists the known ones).
    """
    name = DEFAULT_TASK if name is None else name
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; this lbdeploy knows {', '.join(TASKS)}: upgrade lbdeploy")
    return TASKS[name]


def task_of(manifest_or_metadata: dict) -> Task:
    """The record of the task a manifest or checkpoint metadata names (pose when it names none)."""
    return get_task(manifest_or_metadata.get("task"))


__all__ = ["Agreement", "DEFAULT_TASK", "TASKS", "Task", "get_task", "task_of"]
