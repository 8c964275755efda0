"""The target registry: one record per place an artifact runs, and every table generated from it.

A target names a machine (its CPU architecture and instruction sets, its GPU and SM) and, per
backend that can serve it, that backend's settings: for `ort` the architecture of our kernel
library, for `tvm` the TVM 0.27 target dict and the (cross) compiler that links the module, for
`tensorrt` the board's stock JetPack and TensorRT. `lbdeploy targets`, the `--target` choices and
docs/targets.md all come from TARGETS; `target_table_markdown()` writes that file
(`lbdeploy targets --markdown > docs/targets.md`; a test keeps the file equal to it).

To add a board, append a `Target` to `_targets()` and regenerate docs/targets.md with
`lbdeploy targets --markdown > docs/targets.md` (docs/architecture.md, "Adding a board").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lbdeploy.backends import backends as registered_backends
from lbdeploy.errors import ConfigError

AARCH64_CC = "aarch64-linux-gnu-gcc"
HOST = "host"  # TVMSettings.target for "this machine's CPU, detected when compiling"


@dataclass(frozen=True)
class GPU:
    """An NVIDIA GPU: its name and compute capability (SM number, e.g. 87)."""

    name: str
    sm: int

    @property
    def sm_arch(self) -> str:
        """The arch as nvcc spells it, e.g. "sm_87"."""
        return f"sm_{self.sm}"


@dataclass(frozen=True)
class OrtSettings:
    """ONNX Runtime with our kernel library: nothing beyond the target's CPU architecture."""


@dataclass(frozen=True)
class TVMSettings:
    """A TVM compile preset.

    Attributes:
        target: TVM target dict (a GPU target carries its `host`), or HOST for this machine's CPU.
        cross_compiler: C compiler that links the module's .so; None: the host's default.
        vector_floats: float32 lanes of one SIMD register (tiles the CPU kernels).
        vector_registers: SIMD registers of the CPU (tiles the TernaryConv kernel).
    """

    target: dict | str
    cross_compiler: str | None = None
    vector_floats: int = 4
    vector_registers: int = 32


@dataclass(frozen=True)
class TensorRTSettings:
    """What the board's newest JetPack ships (TensorRT engines are built on the board)."""

    jetpack: str
    stock_tensorrt: str


@dataclass(frozen=True)
class Target:
    """One place an artifact runs.

    Attributes:
        name: the `--target` value. description: the board, in words.
        arch: CPU architecture ("x86_64", "aarch64"); None: the exporting machine's.
        isa: the CPU's SIMD extensions our kernels or TVM use.
        gpu: the NVIDIA GPU, for GPU targets.
        backends: backend name -> its settings; the first backend is the default. A backend
            registered elsewhere adds the targets it serves through its record (`BackendSpec.serves`).
        aliases: other names `--target` accepts for this record.
        board_os: the system its board runs by default (a record of lbdeploy/board_os.py; `lbdeploy bundle`).
    """

    name: str
    description: str
    arch: str | None
    isa: tuple[str, ...]
    backends: dict = field(default_factory=dict)
    gpu: GPU | None = None
    aliases: tuple[str, ...] = ()
    board_os: str = "debian12"

    @property
    def default_backend(self) -> str:
        """The backend used when --backend is not given."""
        return next(iter(self.backends))

    def served(self) -> dict:
        """Backend name -> settings: the target's own backends, then the registered backends whose
        records say they serve it (`BackendSpec.serves`)."""
        others = {name: spec.serves[self.name] for name, spec in registered_backends().items()
                  if self.name in spec.serves and name not in self.backends}
        return {**self.backends, **others}

    def settings(self, backend: str):
        """The settings of `backend` on this target.

        Raises:
            ConfigError: the target does not support that backend (the message names those it does).
        """
        served = self.served()
        if backend not in served:
            raise ConfigError(f"target {self.name} supports --backend {' or '.join(served)}, not {backend!r}")
        return served[backend]


def _arm(mcpu: str | None, *mattr: str) -> dict:
    target = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", *mattr]}
    if mcpu:
        target["mcpu"] = mcpu
    return target


def _arm_tvm(mcpu: str | None, *mattr: str) -> TVMSettings:
    return TVMSettings(_arm(mcpu, *mattr), AARCH64_CC)


def _jetson_tvm(gpu: GPU, host_cpu: str) -> TVMSettings:
    # nvptx: LLVM emits PTX that the CUDA driver JIT-loads on the board (no NVRTC/nvcc there).
    return TVMSettings({"kind": "nvptx", "mcpu": gpu.sm_arch, "mtriple": "nvptx64-nvidia-cuda",
                        "host": _arm(host_cpu)}, AARCH64_CC)


ORIN, XAVIER, NANO = GPU("Orin (Ampere)", 87), GPU("Xavier (Volta)", 72), GPU("Nano (Maxwell)", 53)


def _targets() -> list[Target]:
    ort = OrtSettings()
    return [
        Target("onnx", "portable ONNX + our kernel library for this machine", None, (), {"ort": ort}),
        Target("x86", "x86-64 CPU (this machine's: AVX-512 or AVX2)", "x86_64", ("avx2", "avx512f"),
               {"ort": ort, "tvm": TVMSettings(HOST)}),
        Target("arm64", "generic 64-bit ARM (aarch64, NEON)", "aarch64", ("neon",),
               {"ort": ort, "tvm": _arm_tvm(None)}),
        Target("rpi4", "Raspberry Pi 4 (Cortex-A72)", "aarch64", ("neon",),
               {"ort": ort, "tvm": _arm_tvm("cortex-a72")}),
        Target("rpi5", "Raspberry Pi 5 (Cortex-A76, dotprod, fp16)", "aarch64", ("neon", "dotprod", "fullfp16"),
               {"ort": ort, "tvm": _arm_tvm("cortex-a76", "+dotprod", "+fullfp16")}),
        Target("jetson-orin-cpu", "Jetson Orin CPU cores only (Cortex-A78AE)", "aarch64", ("neon", "dotprod", "fullfp16"),
               {"ort": ort, "tvm": _arm_tvm("cortex-a78ae", "+dotprod", "+fullfp16")}, board_os="jetpack6.1"),
        Target("jetson-orin", "Jetson Orin GPU (Ampere sm_87), aarch64 host", "aarch64", ("neon", "dotprod", "fullfp16"),
               {"tensorrt": TensorRTSettings("6.1+", "10.3"), "tvm": _jetson_tvm(ORIN, "cortex-a78ae")},
               gpu=ORIN, aliases=("jetson",), board_os="jetpack6.1"),
        Target("jetson-xavier", "Jetson Xavier (Volta sm_72; JetPack 5 is unsupported: ort on its CPU cores, in a "
               "Python 3.11 container)", "aarch64", ("neon",),
               {"ort": ort, "tvm": _jetson_tvm(XAVIER, "carmel"), "tensorrt": TensorRTSettings("5.1", "8.5")},
               gpu=XAVIER, board_os="jetpack5.1"),
        Target("jetson-nano", "Jetson Nano (Maxwell sm_53, TensorRT 8.2: too old for lbdeploy; ort runs on its Cortex-A57 CPU)", "aarch64", ("neon",),
               {"ort": ort, "tensorrt": TensorRTSettings("4.6", "8.2")}, gpu=NANO, board_os="jetpack4.6"),
    ]


TARGETS: dict[str, Target] = {target.name: target for target in _targets()}
ALIASES: dict[str, str] = {alias: target.name for target in TARGETS.values() for alias in target.aliases}


def target_names() -> list[str]:
    """Every name `--target` accepts: the records' names, then their aliases."""
    return [*TARGETS, *ALIASES]


def get_target(name: str) -> Target:
    """The record for a target name or alias.

    Raises:
        ConfigError: an unknown name (the message lists the choices).
    """
    canonical = ALIASES.get(name, name)
    if canonical not in TARGETS:
        raise ConfigError(f"unknown target {name!r}; choose one of {', '.join(target_names())} (`lbdeploy targets`)")
    return TARGETS[canonical]


def resolve(name: str, backend: str | None = None) -> tuple[Target, str]:
    """The target `name` and the backend to use (`backend`, else the target's default).

    Raises:
        ConfigError: an unknown target, or a backend the target does not support.
    """
    target = get_target(name)
    chosen = backend or target.default_backend
    target.settings(chosen)
    return target, chosen


def host_target() -> Target:
    """The first target whose CPU is this machine's ("x86" on x86-64, "arm64" on aarch64).

    Raises:
        ConfigError: no target runs on this machine's architecture.
    """
    from lbdeploy.kernels.elf import host_arch

    for target in TARGETS.values():
        if target.arch == host_arch() and target.gpu is None:
            return target
    raise ConfigError(f"no export target runs on this machine ({host_arch()}); export the model elsewhere")


_TARGETS_DOC_HEAD = """# Targets

Every value `lbdeploy export --target` accepts, generated from the target registry
(`lbdeploy/targets.py`) by `lbdeploy targets --markdown > docs/targets.md`; `lbdeploy targets --json`
prints each record with its backends' settings. `tests/test_architecture.py` keeps this file equal
to the command's output.

"""
_TARGETS_DOC_TAIL = """
The first backend of a row is the default. `x86` compiles TVM for this machine's CPU (detected
through LLVM). A Jetson GPU target carries the TensorRT plugin sources (the engine is built on the
board, docs/tensorrt.md) or a TVM module with PTX. The Jetson Nano's stock TensorRT (8.2) is older
than lbdeploy's TensorRT path needs (8.5 for standard ops, 10.3 for our plugin); its CPU cores run
the `ort` backend.
"""


def target_table_markdown() -> str:
    """docs/targets.md: every `--target` value with its machine and backends (the built-in targets'
    own backends, so the file does not depend on which backend packages are installed)."""
    rows = ["| `--target` | runs on | CPU | GPU | backends (first = default) |", "|---|---|---|---|---|"]
    for target in TARGETS.values():
        names = ", ".join(f"`{n}`" for n in (target.name, *target.aliases))
        cpu = f"{target.arch or 'this machine'}" + (f" ({', '.join(target.isa)})" if target.isa else "")
        gpu = f"{target.gpu.name}, {target.gpu.sm_arch}" if target.gpu else "-"
        rows.append(f"| {names} | {target.description} | {cpu} | {gpu} | {', '.join(target.backends)} |")
    return _TARGETS_DOC_HEAD + "\n".join(rows) + "\n" + _TARGETS_DOC_TAIL
