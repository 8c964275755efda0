"""Export targets: one small config per target (optimum style).

A target names where the artifact runs: its CPU architecture (for our kernel library), the
backends that can serve it and the default one. Backend-specific presets live with the backend
(exporters/tvm/targets.py for TVM compile targets, exporters/tensorrt.py for Jetson boards).

To add a target, append an `ExportTarget` to TARGETS.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbdeploy.errors import ConfigError


@dataclass(frozen=True)
class ExportTarget:
    """Where an artifact runs and which backends may serve it."""

    name: str
    description: str
    cpu_arch: str | None  # architecture of our ORT kernel library; None: the exporting machine's
    backends: tuple[str, ...]

    @property
    def default_backend(self) -> str:
        """The backend used when --backend is not given."""
        return self.backends[0]


TARGETS = {t.name: t for t in (
    ExportTarget("onnx", "portable ONNX + our kernel library for this machine", None, ("ort",)),
    ExportTarget("x86", "x86-64 CPU", "x86_64", ("ort", "tvm")),
    ExportTarget("arm64", "64-bit ARM CPU (aarch64, NEON)", "aarch64", ("ort", "tvm")),
    ExportTarget("rpi4", "Raspberry Pi 4 (Cortex-A72)", "aarch64", ("ort", "tvm")),
    ExportTarget("rpi5", "Raspberry Pi 5 (Cortex-A76)", "aarch64", ("ort", "tvm")),
    ExportTarget("jetson-orin-cpu", "Jetson Orin CPU cores (Cortex-A78AE)", "aarch64", ("ort", "tvm")),
    ExportTarget("jetson", "Jetson Orin GPU (alias of jetson-orin)", "aarch64", ("tensorrt", "tvm")),
    ExportTarget("jetson-orin", "Jetson Orin GPU (sm_87)", "aarch64", ("tensorrt", "tvm")),
    ExportTarget("jetson-xavier", "Jetson Xavier GPU (sm_72)", "aarch64", ("tensorrt", "tvm")),
    ExportTarget("jetson-nano", "Jetson Nano GPU (sm_53; TensorRT 8, standard ops only)", "aarch64", ("tensorrt",)),
)}


def get_export_target(name: str, backend: str | None = None) -> tuple[ExportTarget, str]:
    """The target `name` and the backend to use (`backend` or the target's default).

    Raises:
        ConfigError: unknown target, or a backend the target does not support.
    """
    if name not in TARGETS:
        raise ConfigError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")
    target = TARGETS[name]
    chosen = backend or target.default_backend
    if chosen not in target.backends:
        raise ConfigError(f"target {name} supports --backend {' or '.join(target.backends)}, not {chosen!r}")
    return target, chosen


def host_target() -> str:
    """The first export target whose CPU is this machine's ("x86" on x86-64, "arm64" on aarch64).

    Raises:
        ConfigError: no target runs on this machine's architecture.
    """
    from lbdeploy.kernels.elf import host_arch

    names = [target.name for target in TARGETS.values() if target.cpu_arch == host_arch()]
    if not names:
        raise ConfigError(f"no export target runs on this machine ({host_arch()}); export the model elsewhere")
    return names[0]
