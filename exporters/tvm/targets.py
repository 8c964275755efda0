"""Named TVM target presets: which CPU/GPU each lbdeploy target compiles for.

A preset holds the TVM 0.27 target in its dict form, the host target for GPU presets, the C
cross-compiler that links the module's .so, the machine architecture of that .so, and the vector
width the TernaryConv kernel tiles for. `lbdeploy targets` lists them.

To add a board, append a `TargetPreset` to `_presets()`; the compiler and tests pick it up.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from lbdeploy.errors import ConfigError

AARCH64_CC = "aarch64-linux-gnu-gcc"
_AARCH64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}


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


def _arm(mcpu: str | None, *mattr: str) -> dict:
    target = dict(_AARCH64)
    if mcpu:
        target["mcpu"] = mcpu
    target["mattr"] = ["+neon", *mattr]
    return target


def _jetson(sm: str, host_cpu: str) -> dict:
    # nvptx: LLVM emits PTX that the CUDA driver JIT-loads on the board (no NVRTC/nvcc there).
    return {"kind": "nvptx", "mcpu": sm, "mtriple": "nvptx64-nvidia-cuda", "host": _arm(host_cpu)}


def _presets() -> dict[str, TargetPreset]:
    presets = [
        TargetPreset("arm64", "generic 64-bit ARM (aarch64, NEON)", _arm(None), "aarch64", AARCH64_CC),
        TargetPreset("rpi4", "Raspberry Pi 4 (Cortex-A72)", _arm("cortex-a72"), "aarch64", AARCH64_CC),
        TargetPreset(
            "rpi5", "Raspberry Pi 5 (Cortex-A76, dotprod, fp16)",
            _arm("cortex-a76", "+dotprod", "+fullfp16"), "aarch64", AARCH64_CC,
        ),
        TargetPreset(
            "jetson-orin-cpu", "Jetson Orin CPU cores only (Cortex-A78AE)",
            _arm("cortex-a78ae", "+dotprod", "+fullfp16"), "aarch64", AARCH64_CC,
        ),
        TargetPreset(
            "jetson-orin", "Jetson Orin GPU (Ampere sm_87, PTX via nvptx), aarch64 host",
            _jetson("sm_87", "cortex-a78ae"), "aarch64", AARCH64_CC, gpu=True,
        ),
        TargetPreset(
            "jetson-xavier", "Jetson Xavier GPU (Volta sm_72, PTX via nvptx), aarch64 host",
            _jetson("sm_72", "carmel"), "aarch64", AARCH64_CC, gpu=True,
        ),
    ]
    return {preset.name: preset for preset in presets}


def x86_preset() -> TargetPreset:
    """The x86 preset for the CPU of this machine (detected through LLVM)."""
    target, lanes, registers = _host_x86()
    return TargetPreset("x86", f"this x86-64 machine's CPU ({target['mcpu']})", target, "x86_64", None, lanes,
                        registers)


def list_targets() -> list[str]:
    """Names of every preset, x86 first."""
    return ["x86", *_presets()]


def get_target(name: str) -> TargetPreset:
    """The preset called `name`.

    Raises:
        ConfigError: no such preset (the message lists the choices).
    """
    if name == "x86":
        if platform.machine() not in ("x86_64", "AMD64"):
            raise ConfigError("target x86 compiles for this machine's CPU, but this machine is not x86-64")
        return x86_preset()
    presets = _presets()
    if name not in presets:
        raise ConfigError(f"unknown TVM target {name!r}; choose one of {', '.join(list_targets())}")
    return presets[name]
