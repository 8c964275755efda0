"""`lbdeploy bundle`: one .tar.gz that takes an artifact from this machine to a board.

    make_bundle("out-rpi/", "board.tar.gz", target="rpi5")      # offline: wheels for the board inside
    make_bundle("out-jetson/", "jetson.tar.gz", wheels=False)   # the board downloads the pinned wheels

The bundle holds, under one top folder named after the file (board.tar.gz -> board/):
the artifact (verified first), the lbdeploy wheel built from this checkout (pure Python),
requirements.txt with every other package pinned for the board's OS (a `lbdeploy.board_os`
record: its Python, its JetPack pins), the pip wheel, `wheels/` with the board's wheels
(`pip download --platform manylinux..._<arch> --python-version X.Y --only-binary=:all:`), the
ONNX Runtime headers when the board compiles our kernels (a TensorRT fp16 gate), install.sh,
README.md and bundle.json. On the board: `tar xzf board.tar.gz && sh board/install.sh`.

The requirements are resolved here by pip itself (`pip install --dry-run --report` for the board's
platform, with the development pins where the OS runs the tested versions), so this needs PyPI.
The archive is written to a temporary file and renamed into place: nothing is left on failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import lbdeploy.data
from lbdeploy import __version__
from lbdeploy.artifact import open_artifact
from lbdeploy.backends import get_backend
from lbdeploy.board_os import BoardOS, get_board_os, tensorrt_needed
from lbdeploy.errors import ConfigError, ExportError
from lbdeploy.targets import Target, get_target
from lbdeploy.workflows.bundle_install import BundleSettings, install_script, readme

REPO_ROOT = Path(__file__).resolve().parent.parent
# What the lbdeploy wheel is built from (pyproject.toml's packages and README).
PACKAGE_SOURCES = ("pyproject.toml", "README.md", "cli.py", "lbdeploy", "runtime", "exporters", "workflows", "commands")
SAMPLE_IMAGE = Path(lbdeploy.data.__file__).resolve().parent / "sample.jpg"  # package data
PIP_TIMEOUT_S = 1800
# Wheel tags a glibc >= 2.28 board takes (Debian 12, Ubuntu 22.04 / JetPack 6, Raspberry Pi OS bookworm).
MANYLINUX_TAGS = ("manylinux2014", "manylinux_2_17", "manylinux_2_28")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


@dataclass(frozen=True)
class Bundle:
    """What `make_bundle` wrote: the archive, its requirements and how the board installs it."""

    path: Path
    folder: str  # the top folder `tar xzf` creates
    target: str
    board_os: str
    python: str
    requirements: list[str]
    offline: bool
    size_bytes: int


def bundle_target(manifest: dict, target: str | None) -> Target:
    """The target the bundle is for: `target`, else the artifact's; they must agree on CPU and backend.

    Raises:
        ConfigError: an unknown target, or an artifact exported for another CPU or backend.
    """
    exported = manifest.get("target")
    if not (target or exported):
        raise ConfigError("the artifact's manifest names no target; pass --target (`lbdeploy targets`)")
    chosen = get_target(target or exported)
    if exported and exported != chosen.name:
        try:
            made_for = get_target(exported)
        except ConfigError:
            made_for = None
        if made_for is None or made_for.arch != chosen.arch or manifest["backend"] not in chosen.backends:
            raise ConfigError(f"the artifact was exported for {exported} ({manifest['backend']}), not for {chosen.name}; "
                              f"re-export it: lbdeploy export MODEL --target {chosen.name}")
    if chosen.arch is None:
        raise ConfigError(f"target {chosen.name} means 'this machine'; name the board's target (`lbdeploy targets`)")
    return chosen


def bundle_os(target: Target, manifest: dict, name: str | None) -> BoardOS:
    """The board OS the bundle installs on: `name`, else the target's; refused when lbdeploy cannot run there.

    Raises:
        ConfigError: an unknown or unsupported OS (the message says what to use instead), or an OS
            whose TensorRT cannot run the artifact.
    """
    record = get_board_os(name or target.board_os)
    if record.unsupported:
        raise ConfigError(record.unsupported)
    backend = manifest["backend"]
    if backend == "tensorrt":
        if not record.jetson:
            raise ConfigError(f"a TensorRT artifact runs on a Jetson; choose a JetPack --os, not {record.name}")
        custom = bool((manifest.get("tensorrt") or {}).get("plugin"))
        needed = tensorrt_needed(custom)
        if record.tensorrt_version() < needed:
            raise ConfigError(f"{record.description} has TensorRT {record.tensorrt}; this artifact needs TensorRT >= "
                              f"{'.'.join(map(str, needed))} (JetPack 6.1+)"
                              + ("; re-export with --ops standard to run plain Conv on it" if custom else ""))
    if backend == "tvm" and (manifest.get("tvm") or {}).get("device", "cpu") != "cpu" and not record.jetson:
        raise ConfigError(f"a TVM GPU module runs on a Jetson; choose a JetPack --os, not {record.name}")
    return record


def extras_for(manifest: dict) -> list[str]:
    """The pip extras of lbdeploy a board needs for the artifact: the runtime, plus its backend's."""
    extra = get_backend(manifest["backend"]).extra
    return ["runtime"] if extra == "ort" else ["runtime", extra]


def _pip(*args: str, what: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ExportError(f"{what}: pip did not finish within {PIP_TIMEOUT_S} s") from None
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or done.stderr.splitlines()[-1:]
        raise ExportError(f"{what} failed: {' '.join(errors)[:600]} (needs PyPI; pip's own output names the package)")
    return done


def platform_options(record: BoardOS, arch: str) -> list[str]:
    """pip options that select wheels for the board: its CPU, its Python, binary wheels only."""
    options = ["--only-binary=:all:", "--implementation", "cp", "--python-version", record.python]
    for tag in MANYLINUX_TAGS:
        options += ["--platform", f"{tag}_{arch}"]
    return options


def build_lbdeploy_wheel(folder: Path) -> Path:
    """Build lbdeploy's wheel from this checkout into `folder` (the checkout itself is left clean).

    Raises:
        ConfigError: lbdeploy is not running from a source checkout. ExportError: the build failed.
    """
    if not (REPO_ROOT / "pyproject.toml").is_file():
        raise ConfigError(f"bundle builds lbdeploy's wheel from its source checkout, and {REPO_ROOT} is not one; "
                          "run it from a clone of the repository (pip install -e .)")
    source = folder / "source"
    source.mkdir(parents=True)
    for name in PACKAGE_SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.egg-info"))
        else:
            shutil.copy2(path, source / name)
    # with setuptools here the build needs no network; without it pip fetches it into an isolated build
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    _pip("wheel", "--quiet", "--no-deps", *isolation, "-w", str(folder), str(source), what="building lbdeploy's wheel")
    shutil.rmtree(source)
    return next(folder.glob("lbdeploy-*.whl"))


def _constraints(record: BoardOS, folder: Path) -> Path:
    lines = list(record.pins)
    if record.dev_pins and (REPO_ROOT / "constraints.txt").is_file():
        lines += [line for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
                  if line.strip() and not line.startswith("#")]
    path = folder / "constraints.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def resolve_requirements(wheel: Path, extras: list[str], record: BoardOS, arch: str, work: Path) -> list[str]:
    """Every package lbdeploy[extras] pulls in on the board, pinned (`name==version`), lbdeploy left out.

    Resolved by pip for the board's platform and Python (`pip install --dry-run --report`).

    Raises:
        ExportError: pip cannot resolve them (no network, or no wheel for the board).
    """
    report = work / "resolution.json"
    requirement = f"lbdeploy[{','.join(extras)}] @ {wheel.resolve().as_uri()}"
    _pip("install", "--quiet", "--dry-run", "--ignore-installed", "--report", str(report), "--target", str(work / "t"),
         *platform_options(record, arch), "-c", str(_constraints(record, work)), requirement,
         what=f"resolving lbdeploy[{','.join(extras)}] for {record.name} ({arch}, Python {record.python})")
    installs = json.loads(report.read_text())["install"]
    pins = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"] for item in installs}
    pins.pop("lbdeploy", None)
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def download_wheels(requirements: list[str], record: BoardOS, arch: str, folder: Path) -> None:
    """Download the board's wheel of every pinned requirement into `folder`.

    Raises:
        ExportError: a download failed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    _pip("download", "--quiet", "--no-deps", *platform_options(record, arch), "-d", str(folder), *requirements,
         what=f"downloading the wheels for {record.name} ({arch})")


def download_pip(folder: Path) -> Path:
    """pip's own wheel (pure Python; the board's venv is made without ensurepip)."""
    import pip

    _pip("download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(folder), f"pip=={pip.__version__}",
         what="downloading pip's wheel")
    return next(folder.glob("pip-*.whl"))


def _ort_headers(folder: Path) -> None:
    from lbdeploy.kernels.headers import REQUIRED_HEADERS, find_ort_headers

    include = find_ort_headers()
    folder.mkdir()
    for header in include.glob("*.h"):
        shutil.copy2(header, folder / header.name)
    missing = [name for name in REQUIRED_HEADERS if not (folder / name).is_file()]
    if missing:
        raise ExportError(f"the ONNX Runtime headers in {include} lack {missing}")


def _top_folder(out_path: Path) -> str:
    name = out_path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise ConfigError(f"-o {out_path}: name the bundle NAME.tar.gz (or .tgz); it unpacks into NAME/")


def make_bundle(
    artifact_dir,
    out_path,
    target: str | None = None,
    board_os: str | None = None,
    wheels: bool = True,
    force: bool = False,
    progress: Callable[[str], None] = lambda message: None,
) -> Bundle:
    """Write a bundle for the board: artifact, lbdeploy wheel, pinned requirements, board wheels, install.sh.

    Args:
        artifact_dir: the exported artifact (verified first).
        out_path: the archive to write, NAME.tar.gz (unpacks into NAME/).
        target: the board's `--target` (default: the artifact's).
        board_os: the board's system, a record of lbdeploy.board_os (default: the target's).
        wheels: carry the board's wheels so that it installs without network.
        force: replace an existing archive.
        progress: called with one line per step.
    Returns:
        The Bundle written.
    Raises:
        ArtifactError: an unreadable or modified artifact. ConfigError: a target, OS or output that
            does not fit. ExportError: pip could not build, resolve or download (no network).
    """
    root, manifest = open_artifact(artifact_dir)
    chosen = bundle_target(manifest, target)
    record = bundle_os(chosen, manifest, board_os)
    out_path = Path(out_path)
    folder_name = _top_folder(out_path)
    if out_path.exists() and not (force and out_path.is_file()):
        raise ConfigError(f"{out_path} exists; pass --force to replace it" if out_path.is_file() else
                          f"{out_path} exists and is not a file")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    extras = extras_for(manifest)
    custom_trt = manifest["backend"] == "tensorrt" and bool((manifest.get("tensorrt") or {}).get("plugin"))
    with tempfile.TemporaryDirectory(prefix=".lbdeploy-bundle-", dir=out_path.parent) as tmp:
        work, stage = Path(tmp) / "work", Path(tmp) / folder_name
        work.mkdir()
        stage.mkdir()
        progress("building lbdeploy's wheel from this checkout")
        wheel = build_lbdeploy_wheel(work / "dist")
        shutil.copy2(wheel, stage / wheel.name)
        progress(f"resolving lbdeploy[{','.join(extras)}] for {record.name} ({chosen.arch}, Python {record.python})")
        requirements = resolve_requirements(wheel, extras, record, chosen.arch, work)
        (stage / "requirements.txt").write_text(
            f"# lbdeploy[{','.join(extras)}] for {record.description} ({chosen.arch}), resolved by pip\n"
            + "\n".join(requirements) + "\n")
        pip_wheel = download_pip(stage)
        if wheels:
            progress(f"downloading {len(requirements)} wheels for {chosen.arch}, Python {record.python}")
            download_wheels(requirements, record, chosen.arch, stage / "wheels")
        if custom_trt:
            _ort_headers(stage / "ort-headers")
        shutil.copytree(root, stage / "artifact")
        shutil.copy2(SAMPLE_IMAGE, stage / "sample.jpg")
        settings = BundleSettings(
            folder=folder_name, target=chosen.name, board_os=record.name, board_os_description=record.description,
            python=record.python, arch=chosen.arch, backend=manifest["backend"], task=manifest["task"],
            system_site_packages=record.system_site_packages, tensorrt_plugin=custom_trt, offline=wheels,
            ort_headers=custom_trt, lbdeploy_wheel=wheel.name, pip_wheel=pip_wheel.name)
        (stage / "install.sh").write_text(install_script(settings))
        (stage / "install.sh").chmod(0o755)
        (stage / "README.md").write_text(readme(settings))
        (stage / "bundle.json").write_text(json.dumps(
            {"lbdeploy": __version__, "extras": extras, "requirements": requirements, **asdict(settings)}, indent=2) + "\n")
        progress(f"writing {out_path}")
        partial = Path(tmp) / "bundle.tar.gz"
        with tarfile.open(partial, "w:gz") as archive:
            archive.add(stage, arcname=folder_name)
        os.replace(partial, out_path)
    return Bundle(out_path, folder_name, chosen.name, record.name, record.python, requirements, wheels, out_path.stat().st_size)
