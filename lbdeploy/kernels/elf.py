"""Which CPU architecture a shared library was built for, read from its ELF header.

The runtime uses `elf_arch` to refuse a kernel library built for another machine (an aarch64
library copied to an x86-64 host would otherwise fail deep inside ONNX Runtime). To recognise
another architecture, add its ELF `e_machine` number to `_MACHINES`.
"""

from __future__ import annotations

import platform
import struct
from pathlib import Path

from lbdeploy.errors import KernelLibraryError

# ELF e_machine values (System V ABI) -> the names `uname -m` uses.
_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64", 21: "ppc64"}
_MACHINE_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


def elf_arch(path: str | Path) -> str:
    """The architecture an ELF file targets: "x86_64", "aarch64", ... or "elf-machine-<n>".

    Raises:
        KernelLibraryError: the file is missing or not an ELF file.
    """
    path = Path(path)
    try:
        header = _read_head(path)
    except OSError as err:
        raise KernelLibraryError(f"cannot read kernel library {path}: {err.strerror}") from err
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise KernelLibraryError(f"{path} is not an ELF shared library; rebuild it with `python -m lbdeploy.kernels.build`")
    byte_order = "<" if header[5] == 1 else ">"
    (machine,) = struct.unpack(byte_order + "H", header[18:20])
    return _MACHINES.get(machine, f"elf-machine-{machine}")


def host_arch() -> str:
    """This machine's architecture in `elf_arch` names ("x86_64", "aarch64", ...)."""
    machine = platform.machine().lower()
    return _MACHINE_ALIASES.get(machine, machine)


def require_host_arch(path: str | Path, what: str) -> None:
    """Refuse a shared library (`what`, e.g. "kernel library") built for another CPU than this one.

    Raises:
        KernelLibraryError: naming both architectures and how to fix it.
    """
    built_for = elf_arch(path)
    if built_for != host_arch():
        raise KernelLibraryError(
            f"{what} {path} is built for {built_for}, but this machine is {host_arch()}; "
            "export again with the --target of this machine"
        )


def _read_head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(20)
