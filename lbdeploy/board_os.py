"""The operating systems a board runs lbdeploy on: Python version, JetPack stack, pins, support.

One `BoardOS` record per system a bundle (`lbdeploy bundle --os`) is made for and `lbdeploy
doctor` recognises on a Jetson. A record says which CPython the board has (so which wheels pip
must fetch), what NVIDIA's JetPack puts beside it (Jetson Linux release, CUDA, TensorRT, from
NVIDIA's release tables), the pins that keep a venv consistent with those system packages, and,
when lbdeploy cannot run there, why and what to use instead.

JetPack facts (NVIDIA's JetPack release notes): 4.6 = Jetson Linux 32.6/32.7, Ubuntu 18.04
(Python 3.6), CUDA 10.2, TensorRT 8.2; 5.1.x = Jetson Linux 35.2-35.6, Ubuntu 20.04 (Python 3.8),
CUDA 11.4, TensorRT 8.5.2; 6.0 = Jetson Linux 36.3, Ubuntu 22.04 (Python 3.10), CUDA 12.2,
TensorRT 8.6; 6.1 and 6.2 = Jetson Linux 36.4, CUDA 12.6, TensorRT 10.3, cuDNN 9.3.

To support a new JetPack or distribution, append a record to `_records()`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbdeploy.errors import ConfigError

# Requires-Python of lbdeploy (pyproject.toml); a board OS with an older Python is unsupported.
MIN_PYTHON = (3, 10)
# The TernaryConv TensorRT plugin is an IPluginV3 built and tested against TensorRT >= 10.3.
MIN_PLUGIN_TENSORRT = (10, 3)
# A standard-ops TensorRT artifact needs the named-tensor API (set_input_shape, execute_async_v3).
MIN_STANDARD_TENSORRT = (8, 5)
NV_TEGRA_RELEASE = "/etc/nv_tegra_release"
INSTEAD_OF_OLD_JETPACK = ("export the model with --backend ort for the board's CPU cores and run it with Python 3.11 "
                          "in a Debian 12 container (docker run python:3.11-slim-bookworm; bundle it with --os debian12)")


@dataclass(frozen=True)
class BoardOS:
    """A system a board runs: its Python and, on a Jetson, its JetPack stack.

    Attributes:
        name: the `--os` value. description: the system, in words.
        python: the CPython "major.minor" it ships (pip fetches wheels for it).
        l4t: Jetson Linux release "major.minor" (the first line of /etc/nv_tegra_release), None off Jetson.
        cuda, tensorrt: JetPack's CUDA and TensorRT "major.minor", None off Jetson.
        pins: pip constraints that keep a venv consistent with the system packages it sees.
        dev_pins: the development pins (constraints.txt) apply too: the versions CI tests.
        system_site_packages: the venv must see system packages (JetPack's TensorRT Python module).
        unsupported: why lbdeploy cannot run on it, and what to use instead; "" when it can.
    """

    name: str
    description: str
    python: str
    l4t: str | None = None
    cuda: str | None = None
    tensorrt: str | None = None
    pins: tuple[str, ...] = ()
    dev_pins: bool = False
    system_site_packages: bool = False
    unsupported: str = ""

    @property
    def jetson(self) -> bool:
        """True for a JetPack release."""
        return self.l4t is not None

    def tensorrt_version(self) -> tuple[int, int] | None:
        """JetPack's TensorRT as (major, minor), None off Jetson."""
        return _version(self.tensorrt) if self.tensorrt else None


def _version(text: str) -> tuple[int, int]:
    major, minor = (text.split(".") + ["0"])[:2]
    return int(major), int(minor)


def _jetpack6(name: str, l4t: str, cuda: str, tensorrt: str, releases: str) -> BoardOS:
    # numpy < 2: Ubuntu 22.04's python3-numpy is 1.21 and the venv sees JetPack's modules built for numpy 1.
    # cuda-python follows JetPack's CUDA minor version (its runtime bindings must not be newer than the driver).
    return BoardOS(name, f"NVIDIA JetPack {releases} (Jetson Linux {l4t}, Ubuntu 22.04, Python 3.10, CUDA {cuda}, "
                         f"TensorRT {tensorrt})", "3.10", l4t, cuda, tensorrt,
                   pins=("numpy<2", f"cuda-python=={cuda}.*"), system_site_packages=True)


def _records() -> list[BoardOS]:
    return [
        BoardOS("debian12", "Debian 12 / Raspberry Pi OS (bookworm), Python 3.11", "3.11", dev_pins=True),
        BoardOS("ubuntu24.04", "Ubuntu 24.04, Python 3.12", "3.12", dev_pins=True),
        _jetpack6("jetpack6.0", "36.3", "12.2", "8.6", "6.0"),
        _jetpack6("jetpack6.1", "36.4", "12.6", "10.3", "6.1 / 6.2"),
        BoardOS("jetpack5.1", "NVIDIA JetPack 5.1.x (Jetson Linux 35, Ubuntu 20.04, Python 3.8, CUDA 11.4, TensorRT 8.5)",
                "3.8", "35", "11.4", "8.5",
                unsupported="JetPack 5 is not supported: it ships Python 3.8 and TensorRT 8.5 whose Python bindings exist "
                            "for 3.8 only, and lbdeploy needs Python >= 3.10. On an Orin, flash JetPack 6.1 or newer; on a "
                            f"Xavier (no JetPack 6), {INSTEAD_OF_OLD_JETPACK}"),
        BoardOS("jetpack4.6", "NVIDIA JetPack 4.6.x (Jetson Linux 32, Ubuntu 18.04, Python 3.6, CUDA 10.2, TensorRT 8.2)",
                "3.6", "32", "10.2", "8.2",
                unsupported="JetPack 4 is not supported: it ships Python 3.6 and TensorRT 8.2, and lbdeploy needs "
                            f"Python >= 3.10. On a Nano, {INSTEAD_OF_OLD_JETPACK}"),
    ]


BOARD_OSES: dict[str, BoardOS] = {record.name: record for record in _records()}


def get_board_os(name: str) -> BoardOS:
    """The record of `name`.

    Raises:
        ConfigError: an unknown name (the message lists the choices).
    """
    if name not in BOARD_OSES:
        raise ConfigError(f"unknown board OS {name!r}; choose one of {', '.join(BOARD_OSES)}")
    return BOARD_OSES[name]


def jetpack_of_l4t(release: str) -> BoardOS | None:
    """The JetPack record of a Jetson Linux release ("36.4.0", "35.3.1"), or None when it is unknown."""
    found = None
    for record in BOARD_OSES.values():
        if record.l4t and (release == record.l4t or release.startswith(record.l4t + ".")):
            if found is None or len(record.l4t) > len(found.l4t):
                found = record
    return found


def parse_nv_tegra_release(text: str) -> str | None:
    """The Jetson Linux release of /etc/nv_tegra_release's first line ("# R36 (release), REVISION: 4.0, ...")
    as "36.4.0", or None when the text is not in that form."""
    head = text.split("\n", 1)[0]
    if not head.startswith("# R") or "REVISION:" not in head:
        return None
    major = head[3:].split(" ", 1)[0]
    revision = head.split("REVISION:", 1)[1].split(",", 1)[0].strip()
    return f"{major}.{revision}" if major.isdigit() and revision else None


def tensorrt_needed(custom_ops: bool) -> tuple[int, int]:
    """The oldest TensorRT that runs a TensorRT artifact: with our plugin (custom ops) or plain Conv."""
    return MIN_PLUGIN_TENSORRT if custom_ops else MIN_STANDARD_TENSORRT


def board_os_table_markdown() -> str:
    """The table of docs/tensorrt.md's "Which JetPack": every board OS with its stack and status."""
    rows = ["| `--os` | system | Python | CUDA | TensorRT | lbdeploy |", "|---|---|---|---|---|---|"]
    for record in BOARD_OSES.values():
        status = "unsupported (see below)" if record.unsupported else "supported"
        if record.jetson and not record.unsupported and record.tensorrt_version() < MIN_PLUGIN_TENSORRT:
            status = "supported, `--ops standard` only on TensorRT"
        rows.append(f"| `{record.name}` | {record.description} | {record.python} | {record.cuda or '-'} | "
                    f"{record.tensorrt or '-'} | {status} |")
    return "\n".join(rows) + "\n"
