"""The backend registry: one record per inference engine, naming where each of its parts lives.

A backend has up to two parts, one per layer (docs/architecture.md):
- its runtime class (`runtime/backends/<name>.py`): built from an artifact folder (or a model.pt
  for `torch`) and its manifest; runs named float32 inputs; `op_breakdown(...)` gives the per-op
  time `lbdeploy profile` shows;
- its export step (`exporters/backends/<name>.py`, absent for `torch`): checks the target, adds
  the backend's files to an artifact and says how to run the parity gate on it.

The core names these parts by dotted path and never imports them; `load_runtime` and
`load_exporter` import the one asked for, so a board without torch, TVM or TensorRT imports
lbdeploy and the runtime fine. Every CLI choice of backend comes from BACKENDS.

To add a backend: write its runtime module and its export module, then add one `BackendSpec`
line here (docs/architecture.md, "Adding a backend").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from lbdeploy.errors import BackendUnavailable, ConfigError


@dataclass(frozen=True)
class BackendSpec:
    """Where one backend's parts live and what it can do.

    Attributes:
        name: the `--backend` value. description: the engine, in words.
        extra: the pip extra that installs what it needs at run time.
        runtime: "module:Class" of the runtime class.
        exporter: "module:Class" of the export step; None: runs model.pt files, not artifacts.
        exports_here: an artifact for this machine can be exported on the fly (eval/profile --compare).
        precisions: the `--quantize` precisions its artifacts can hold besides float32.
        ops: which ternary convs it runs: "custom" (our op only), "standard" (the ONNX Conv only, so
            every layer is exported dense) or "both" (`export --ops` and `--kernels` choose).
    """

    name: str
    description: str
    extra: str
    runtime: str
    exporter: str | None = None
    exports_here: bool = False
    precisions: tuple[str, ...] = ()
    ops: str = "both"

    def load_runtime(self):
        """Import and return the runtime class.

        Raises:
            BackendUnavailable: its package is not installed (the message names the extra).
        """
        return _load(self.runtime, f"backend {self.name!r}", self.extra)

    def load_exporter(self):
        """Import and return the export-step class.

        Raises:
            ConfigError: the backend has no export step. BackendUnavailable: a package is missing.
        """
        if self.exporter is None:
            raise ConfigError(f"backend {self.name!r} runs model.pt checkpoints and has nothing to export")
        return _load(self.exporter, f"the {self.name!r} exporter", self.extra)


def _load(dotted: str, what: str, extra: str):
    module_name, class_name = dotted.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BackendUnavailable(f"{what} cannot be loaded ({err}); install it: pip install 'lbdeploy[{extra}]'") from err
    return getattr(module, class_name)


BACKENDS: dict[str, BackendSpec] = {spec.name: spec for spec in (
    BackendSpec("torch", "PyTorch eager on a model.pt (the reference)", "torch",
                "lbdeploy.runtime.backends.torch_backend:TorchBackend"),
    BackendSpec("ort", "ONNX Runtime with our TernaryConv kernel library", "ort",
                "lbdeploy.runtime.backends.ort:OrtBackend", "lbdeploy.exporters.backends.ort:OrtExport", exports_here=True,
                precisions=("int8",)),
    BackendSpec("tvm", "a TVM module compiled for the target (CPU or NVIDIA GPU)", "tvm",
                "lbdeploy.runtime.backends.tvm:TVMBackend", "lbdeploy.exporters.backends.tvm:TVMExport", exports_here=True,
                precisions=("int8",)),
    BackendSpec("tensorrt", "a TensorRT engine with our TernaryConv plugin, built on the Jetson", "tensorrt",
                "lbdeploy.runtime.backends.tensorrt:TensorRTBackend", "lbdeploy.exporters.backends.tensorrt:TensorRTExport"),
)}
EXPORT_BACKENDS = [name for name, spec in BACKENDS.items() if spec.exporter]


def get_backend(name: str) -> BackendSpec:
    """The record of backend `name`.

    Raises:
        ConfigError: an unknown name (the message lists the choices).
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name]
