"""The Backend protocol and the factory that builds a runtime backend by name.

A backend is constructed from an artifact folder (or a model.pt for "torch") and its manifest,
and runs named float32 inputs to named outputs. "auto" picks "torch" for a model.pt and the
manifest's own backend for an artifact folder. Which class serves a name is the backend's record
(lbdeploy/backends.py, registered through the `lbdeploy.backends` entry points); each runtime
class imports its engine only when built, so a board without torch, TVM or TensorRT can still
import the runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from lbdeploy.backends import backend_names, get_backend
from lbdeploy.errors import ConfigError

AUTO = "auto"


def runtime_choices() -> list[str]:
    """Every runtime `--backend` value: "auto", then each registered backend."""
    return [AUTO, *backend_names()]


@runtime_checkable
class Backend(Protocol):
    """What the Predictor and the profiler need from an inference engine.

    Every runtime class also offers `op_breakdown(feeds, runs, top) -> runtime.backends.breakdown.Breakdown`
    (per-op time from the engine's own profiler) and the class attribute `interleave_env`
    (environment settings that let it share the cores with other engines in one process).
    """

    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on named float32 arrays; returns every output by name."""
        ...


def resolve_backend_name(name: str, source: Path, manifest: dict) -> str:
    """The concrete backend for `name` ("auto" resolves from the source kind and the manifest).

    Raises:
        ConfigError: an unknown backend name, or "torch" asked of an exported artifact folder.
    """
    if name == AUTO:
        return "torch" if source.is_file() else manifest.get("backend", "ort")
    if name not in backend_names():
        raise ConfigError(f"unknown backend {name!r}; choose one of {runtime_choices()}")
    spec = get_backend(name)
    if spec.exporter is None and not source.is_file():
        raise ConfigError(f"backend {name!r} runs a model.pt checkpoint, but {source} is an artifact folder")
    if spec.exporter is not None and source.is_file():
        raise ConfigError(f"backend {name!r} runs an exported artifact folder; export {source} with `lbdeploy export`")
    return name


def create_backend(name: str, artifact_dir_or_model_pt, manifest: dict, **opts) -> Backend:
    """Build a backend by name.

    Args:
        name: "auto" or a registered backend name (lbdeploy.backends).
        artifact_dir_or_model_pt: the artifact folder, or a model.pt for "torch".
        manifest: the artifact's manifest (or the equivalent built from a checkpoint).
        **opts: backend options (e.g. threads=).

    Returns:
        An object following the Backend protocol.

    Raises:
        ConfigError: an unknown name; BackendUnavailable: the backend's package is not installed.
    """
    source = Path(artifact_dir_or_model_pt)
    resolved = resolve_backend_name(name, source, manifest)
    return get_backend(resolved).runtime(source, manifest, **opts)
