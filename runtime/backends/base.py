"""The Backend protocol and the registry that builds a backend by name.

A backend is constructed from an artifact folder (or a model.pt for "torch") and its manifest,
and runs named float32 inputs to named outputs. "auto" picks "torch" for a model.pt and the
manifest's own backend for an artifact folder. Backend modules are imported lazily by dotted
name, so a board without torch, TVM or TensorRT can still import the runtime.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from lbdeploy.errors import BackendUnavailable, ConfigError

# name -> "module:Class"; every class takes (artifact_dir_or_model_pt, manifest, **opts).
BACKENDS = {
    "torch": "runtime.backends.torch_backend:TorchBackend",
    "ort": "runtime.backends.ort:OrtBackend",
    "tvm": "runtime.backends.tvm:TVMBackend",
    "tensorrt": "runtime.backends.tensorrt:TensorRTBackend",
}


@runtime_checkable
class Backend(Protocol):
    """What the Predictor needs from an inference engine."""

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
    if name == "auto":
        return "torch" if source.is_file() else manifest.get("backend", "ort")
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {['auto', *BACKENDS]}")
    if name == "torch" and not source.is_file():
        raise ConfigError(f"backend 'torch' runs a model.pt checkpoint, but {source} is an artifact folder")
    if name != "torch" and source.is_file():
        raise ConfigError(f"backend {name!r} runs an exported artifact folder; export {source} with `lbdeploy export`")
    return name


def create_backend(name: str, artifact_dir_or_model_pt, manifest: dict, **opts) -> Backend:
    """Build a backend by name.

    Args:
        name: "auto", "torch", "ort", "tvm" or "tensorrt".
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
    module_name, class_name = BACKENDS[resolved].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BackendUnavailable(
            f"backend {resolved!r} cannot be loaded ({err}); install its extra, e.g. pip install 'lbdeploy[{resolved}]'"
        ) from err
    return getattr(module, class_name)(source, manifest, **opts)
