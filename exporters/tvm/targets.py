"""TVM compile presets: a target record of lbdeploy/targets.py seen by the TVM compiler.

A `TVMPreset` keeps the resolved record (`board`) and adds what compiling needs beyond it: the
TVM 0.27 target in its dict form (the host target included for GPU presets), the C cross-compiler
that links the module's .so and the vector width the TernaryConv kernel tiles for, all from the
record's TVM settings, detecting this machine's CPU for `x86`. Name, architecture and GPU are
the record's own (never re-declared here).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from lbdeploy.errors import ConfigError
from lbdeploy.targets import HOST, TARGETS, Target


@dataclass(frozen=True)
class TVMPreset:
    """How TVM compiles for one target record.

    Attributes:
        board: the target record (lbdeploy.targets.Target) it was made from.
        target: TVM target dict (for GPU presets it carries its `host`).
        cross_compiler: C compiler that links the .so; None means the host's default compiler.
        vector_floats: float32 lanes of one SIMD register (tiles the CPU kernels).
        vector_registers: SIMD registers of the CPU (tiles the TernaryConv kernel).
        detected: the CPU in words, when it was detected on this machine (`description` is the record's otherwise).
    """

    board: Target
    target: dict
    cross_compiler: str | None = None
    vector_floats: int = 4
    vector_registers: int = 32
    detected: str | None = None

    @property
    def name(self) -> str:
        """The target's `--target` name."""
        return self.board.name

    @property
    def description(self) -> str:
        """The machine, in words."""
        return self.detected or self.board.description

    @property
    def arch(self) -> str:
        """Machine architecture of the produced .so ("x86_64" or "aarch64")."""
        return self.board.arch

    @property
    def gpu(self) -> bool:
        """True when the model's kernels run on the target's NVIDIA GPU."""
        return self.board.gpu is not None

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


def _host_preset(board: Target, settings) -> TVMPreset:
    """The preset for this machine's x86-64 CPU (detected through LLVM)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise ConfigError(f"target {board.name} compiles for this machine's CPU, but this machine is not x86-64")
    target, lanes, registers = _host_x86()
    return TVMPreset(board, target, settings.cross_compiler, lanes, registers,
                     detected=f"this x86-64 machine's CPU ({target['mcpu']})")


def list_targets() -> list[str]:
    """Names of every target TVM compiles for, in registry order."""
    return [name for name, target in TARGETS.items() if "tvm" in target.backends]


def tvm_preset(board: Target) -> TVMPreset:
    """The TVM preset of a resolved target record.

    Raises:
        ConfigError: a target TVM does not compile for (the message lists the choices).
    """
    if "tvm" not in board.backends:
        raise ConfigError(f"TVM does not compile for target {board.name!r}; choose one of {', '.join(list_targets())}")
    settings = board.backends["tvm"]
    if settings.target == HOST:
        return _host_preset(board, settings)
    return TVMPreset(board, settings.target, settings.cross_compiler, settings.vector_floats, settings.vector_registers)
