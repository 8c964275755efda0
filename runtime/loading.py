"""Open a model source for inference: an artifact folder (verified) or a model.pt, with its backend.

Shared by every predictor (runtime.tasks: pose, saliency, classification) so that
they load, verify and pick backends the same way. `model_task` tells which predictor a source
needs without building a backend (the CLI and the server use it to choose).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from lbdeploy.artifact import MANIFEST_NAME, is_artifact_folder, open_artifact
from lbdeploy.errors import ArtifactError
from lbdeploy.runtime.backends import create_backend


class LoadedModel(NamedTuple):
    """A source ready to run: its resolved path, its manifest and the backend running it."""

    source: Path
    manifest: dict
    backend: object


def load_model_source(artifact_or_model_pt, backend: str = "auto", threads: int | None = None,
                      **backend_opts) -> LoadedModel:
    """Build the backend for an artifact folder (verified against its manifest) or a model.pt.

    Args:
        artifact_or_model_pt: an artifact folder written by `lbdeploy export`, or a model.pt.
        backend: "auto" or a name of lbdeploy.backends; threads, backend_opts: for the backend.
    Returns:
        The LoadedModel (a model.pt's manifest is the torch backend's checkpoint manifest).
    Raises:
        ArtifactError: a missing, unknown or modified artifact; ConfigError / BackendUnavailable /
            KernelLibraryError: the backend cannot run it here.
    """
    source = Path(artifact_or_model_pt)
    if source.is_file():
        runner = create_backend(backend, source, {}, threads=threads, **backend_opts)
        return LoadedModel(source, runner.manifest, runner)
    if source.is_dir():
        source, manifest = open_artifact(source)
        return LoadedModel(source, manifest, create_backend(backend, source, manifest, threads=threads, **backend_opts))
    raise ArtifactError(f"{source} does not exist; pass an artifact folder or a model.pt")


def model_task(artifact_or_model_pt) -> str:
    """The task ("pose", "saliency", ...) of an artifact folder or a model.pt, without running it.

    Raises:
        ArtifactError: neither an artifact folder nor a file; CheckpointError: an unreadable model.pt.
    """
    source = Path(artifact_or_model_pt)
    if source.is_dir() and is_artifact_folder(source):
        return str(json.loads((source / MANIFEST_NAME).read_text()).get("task", "pose"))
    if source.is_file():
        from lbdeploy.checkpoint import load_checkpoint

        return str(load_checkpoint(source).metadata.get("task", "pose"))
    raise ArtifactError(f"{source} is neither an artifact folder nor a model.pt; pass the folder written by "
                        "`lbdeploy export` or a model.pt")


class PredictorRecipe:
    """A picklable recipe for a predictor (servers call it once per process or Ray replica).

    Subclasses name `predictor_class`; the recipe holds the source and the predictor's options.
    """

    predictor_class: type

    def __init__(self, artifact_or_model_pt, **predictor_kwargs):
        self.source, self.kwargs = str(artifact_or_model_pt), predictor_kwargs

    def __call__(self):
        """Build the predictor."""
        return self.predictor_class(self.source, **self.kwargs)
