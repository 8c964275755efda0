"""TVM compile presets, made from the target registry's TVM settings (lbdeploy/targets.py).

A preset holds the TVM 0.27 target in its dict form, the host target for GPU presets, the C
cross-compiler that links the module's .so, the machine architecture of that .so, and the vector
width the TernaryConv kernel tiles for. The boards themselves are records of lbdeploy/targets.py;
this module only turns a record into a preset, detecting this machine's CPU for `x86`.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from lbdeploy.errors import ConfigError
from lbdeploy.targets import HOST, TARGETS
from lbdeploy.targets import get_target as registry_target


@dataclass(frozen=True)
class TargetPreset:
    """One compile target.

    Attributes:
        name: the preset name used on the command line (`--target`).
        description: the board, in words.
        target: TVM target dict (for GPU presets it carries its `host`).
        arch: machine architecture of the produced .so ("x86_64" or "aarch64").
        cross_compiler: C compiler that links the .so; None means the host's default compiler.
        vector_floats: float32 lanes of one SIMD register (tiles the CPU kernels).
        vector_registers: SIMD registers of the CPU (tiles the TernaryConv kernel).
        gpu: True when the model's kernels run on an NVIDIA GPU.
    """

    name: str
    description: str
    target: dict
    arch: str
    cross_compiler: str | None = None
    vector_floats: int = 4
    vector_registers: int = 32
    gpu: bool = False

    def tvm_target(self):
        """The `tvm.target.Target` of this preset (imports TVM)."""
        import tvm

        return tvm.target.Target(self.target)


def _host_x86() -> tuple[dict, int, int]:
    """The host CPU as an llvm target dict, its float32 SIMD lanes and its SIMD registers."""
    from tvm.target import codegen

    cpu = codegen.llvm_get_system_cpu()
    target = {"kind": "llvm", "mcpu": cpu}
    flags = _cpu_flags()
    if "avx512f" in flags:
        return target, 16, 32
    return target, 8 if "avx2" in flags else 4, 16


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _host_preset(name: str) -> TargetPreset:
    """The preset for this machine's x86-64 CPU (detected through LLVM)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise ConfigError(f"target {name} compiles for this machine's CPU, but this machine is not x86-64")
    target, lanes, registers = _host_x86()
    return TargetPreset(name, f"this x86-64 machine's CPU ({target['mcpu']})", target, "x86_64", None, lanes,
                        registers)


def list_targets() -> list[str]:
    """Names of every target TVM compiles for, in registry order."""
    return [name for name, target in TARGETS.items() if "tvm" in target.backends]


def get_target(name: str) -> TargetPreset:
    """The TVM preset of target `name` (a registry name or alias).

    Raises:
        ConfigError: no such target, or one TVM does not compile for (the message lists the choices).
    """
    record = registry_target(name)
    if "tvm" not in record.backends:
        raise ConfigError(f"TVM does not compile for target {name!r}; choose one of {', '.join(list_targets())}")
    settings = record.backends["tvm"]
    if settings.target == HOST:
        return _host_preset(record.name)
    return TargetPreset(record.name, record.description, settings.target, record.arch, settings.cross_compiler,
                        settings.vector_floats, settings.vector_registers, gpu=record.gpu is not None)
