"""The emulated ARM lane: run aarch64 Python, ONNX models and exported artifacts under qemu-user.

`scripts/arm-lane.sh` builds (once, cached) an aarch64 CPython 3.11 with numpy, onnxruntime and
apache-tvm, plus the `arm-python` wrapper that runs it under qemu on an x86-64 Debian host; see
docs/arm-lane.md. This module finds or builds that lane and runs things in it:

    python = ensure_arm_lane()                           # arm-python, or None: see probe_arm_lane().reason
    run_arm_python("import platform; print(platform.machine())")
    outputs = run_onnx_emulated([OnnxRun("m.onnx", {"x": x})], library=aarch64_lib)
    outputs = run_artifact_emulated("out/", batch)      # a whole exported artifact, via runtime/
    pose = predict_emulated("out/", "person.jpg")       # the Predictor, image to keypoints
    bare = write_bare_python("tools/")                  # tools/python3: the bare interpreter, venvs work

The repo root is on the lane's PYTHONPATH, so `lbdeploy` and `runtime` import there (pure Python);
torch does not, as on a board. To run a new kind of workload, write a function that prepares files
on the host and hands them to one `run_arm_python` call (an emulated start with numpy and
onnxruntime takes ~2 s, with tvm ~6 s; emulated vector math is ~100x slower than native).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lbdeploy import errors
from lbdeploy.errors import BackendUnavailable
from lbdeploy.runtime.testing import artifact_runner

REPO_ROOT = Path(__file__).resolve().parents[2]
LANE_SCRIPT = REPO_ROOT / "scripts" / "arm-lane.sh"
# A first build downloads ~150 MB and takes ~30 s here; allow for slow mirrors.
BUILD_TIMEOUT_S = 1800
# Interpreter start + numpy/onnxruntime import under qemu takes ~2 s; all vectors in one batch ~3 s.
DEFAULT_TIMEOUT_S = 300
UNAVAILABLE_EXIT_CODE = 3  # scripts/arm-lane.sh: a prerequisite cannot be had on this host
REQUIRE_ENV = "LBDEPLOY_REQUIRE_ARM"


@dataclass(frozen=True)
class ArmLane:
    """Outcome of looking for the lane: the wrapper's path, or None and the reason."""

    python: Path | None
    reason: str = ""


@dataclass(frozen=True)
class OnnxRun:
    """One ONNX model and its named inputs, to run in the lane."""

    model: Path
    inputs: Mapping[str, np.ndarray] = field(default_factory=dict)


def arm_lane_required() -> bool:
    """True when env LBDEPLOY_REQUIRE_ARM=1 (CI): a lane that cannot be built is a failure, not a skip."""
    return os.environ.get(REQUIRE_ENV, "") == "1"


@functools.cache
def probe_arm_lane() -> ArmLane:
    """Build the lane if needed (scripts/arm-lane.sh, cached across runs) and report where it is.

    Runs the script at most once per process. Never raises for a missing prerequisite.

    Returns:
        ArmLane with `python` set to the `arm-python` wrapper, or None with the reason.
    """
    if platform.system() != "Linux":
        return ArmLane(None, f"the emulated ARM lane needs a Linux host with qemu-user, not {platform.system()}")
    if not LANE_SCRIPT.is_file():
        return ArmLane(None, f"{LANE_SCRIPT} not found: the ARM lane is built from a source checkout")
    try:
        done = subprocess.run(
            ["bash", str(LANE_SCRIPT)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return ArmLane(None, f"{LANE_SCRIPT.name} did not finish within {BUILD_TIMEOUT_S} s")
    stderr_tail = " | ".join(done.stderr.strip().splitlines()[-3:])
    if done.returncode == UNAVAILABLE_EXIT_CODE:
        return ArmLane(None, f"emulated ARM lane unavailable here: {stderr_tail}")
    if done.returncode != 0:
        return ArmLane(None, f"{LANE_SCRIPT.name} failed (exit {done.returncode}): {stderr_tail}")
    printed = done.stdout.strip().splitlines()
    python = Path(printed[-1]) if printed else None
    if python is None or not os.access(python, os.X_OK):
        return ArmLane(None, f"{LANE_SCRIPT.name} printed {python}, which is not an executable")
    return ArmLane(python)


def ensure_arm_lane() -> Path | None:
    """Path of the lane's `arm-python` wrapper, building the lane once; None when it cannot be built.

    `probe_arm_lane().reason` says why it is None.
    """
    return probe_arm_lane().python


def require_arm_lane() -> Path:
    """Path of the lane's `arm-python` wrapper.

    Raises:
        BackendUnavailable: the lane cannot be built on this host (the message says why).
    """
    lane = probe_arm_lane()
    if lane.python is None:
        raise BackendUnavailable(f"{lane.reason}. See docs/arm-lane.md for what the lane needs.")
    return lane.python


def lane_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the emulated interpreter: the host's minus its Python settings, plus `env`.

    The repo root is always on PYTHONPATH (after any PYTHONPATH given in `env`), so the pure-Python
    `lbdeploy` and `runtime` packages import; x86 site-packages never leak in.
    """
    base = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    extra = dict(env or {})
    paths = [extra.pop("PYTHONPATH")] if extra.get("PYTHONPATH") else []
    base.update(extra)
    base["PYTHONPATH"] = os.pathsep.join([*paths, str(REPO_ROOT)])
    return base


def run_arm_python(
    code_or_args: str | Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run the lane's aarch64 python with `-c code` (a str) or with the given argument list.

    Args:
        code_or_args: Python source to run, or arguments for the interpreter (["-m", "mod", ...]).
        env: extra environment variables (see `lane_environment`).
        timeout: seconds before the emulated process is killed.
        check: raise when the process exits non-zero.
    Returns:
        The completed process, stdout and stderr captured as text.
    Raises:
        BackendUnavailable: the lane cannot be built here.
        subprocess.CalledProcessError: `check` and a non-zero exit (stderr is on the exception).
        subprocess.TimeoutExpired: it ran longer than `timeout`.
    """
    python = require_arm_lane()
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else list(code_or_args)
    return subprocess.run(
        [str(python), *args], env=lane_environment(env), capture_output=True, text=True, timeout=timeout, check=check
    )


_BARE_SITECUSTOMIZE = """\"\"\"Bare emulated python: venvs made from it point at the wrapper, not the aarch64 ELF.\"\"\"
import sys

sys._base_executable = {wrapper!r}
"""


def write_bare_python(folder: str | Path) -> Path:
    """Write `folder/python3`: the lane's aarch64 interpreter without the lane's wheels, as on a fresh board.

    Unlike `arm-python`, nothing of the lane's site-packages is on its path, and a venv made with it
    (`python3 -m venv --without-pip V`) works: V/bin/python links to this wrapper, which starts qemu
    with that path as argv[0], so the emulated interpreter finds V/pyvenv.cfg (there is no
    binfmt_misc for aarch64 on the host to run the ELF directly). Put `folder` first on PATH to run a
    board's shell script (e.g. a bundle's install.sh) under emulation.

    Returns:
        The wrapper's path. Raises: BackendUnavailable when the lane cannot be built here.
    """
    lane = require_arm_lane().parent
    folder = Path(folder).resolve()
    (folder / "site").mkdir(parents=True, exist_ok=True)
    wrapper = folder / "python3"
    (folder / "site" / "sitecustomize.py").write_text(_BARE_SITECUSTOMIZE.format(wrapper=str(wrapper)))
    sysroot = lane / "sysroot"
    wrapper.write_text(
        "#!/bin/sh\n# the emulated ARM lane's bare aarch64 python (runtime/testing/arm_lane.py: write_bare_python)\n"
        f'exec env -u PYTHONHOME PYTHONNOUSERSITE=1 PYTHONPATH="{folder / "site"}" qemu-aarch64-static '
        f'-L "{sysroot}" -0 "$0" "{sysroot}/usr/bin/python3.11" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def run_onnx_emulated(
    runs: Sequence[OnnxRun],
    library: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    intra_op_threads: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Run ONNX models with aarch64 ONNX Runtime under qemu, all in one emulated process.

    Args:
        runs: the models and their inputs.
        library: an aarch64 custom-op library (e.g. our TernaryConv kernels) registered in each session.
        timeout: seconds for the whole batch.
        intra_op_threads: ONNX Runtime intra-op threads; 0 keeps its default.
    Returns:
        For each run, its outputs by output name.
    Raises:
        BackendUnavailable: the lane cannot be built here.
        subprocess.CalledProcessError: onnxruntime failed in the lane (its stderr is on the exception).
    """
    with tempfile.TemporaryDirectory(prefix="lbdeploy-arm-") as tmp:
        folder = Path(tmp)
        job = {"library": str(library) if library else None, "intra_op_threads": intra_op_threads, "runs": []}
        for index, run in enumerate(runs):
            inputs = folder / f"in_{index}.npz"
            np.savez(inputs, **dict(run.inputs))
            job["runs"].append(
                {"model": str(Path(run.model).resolve()), "inputs": str(inputs), "outputs": str(folder / f"out_{index}.npz")}
            )
        (folder / "job.json").write_text(json.dumps(job))
        run_arm_python(["-m", "lbdeploy.runtime.testing.ort_driver", str(folder / "job.json")], timeout=timeout)
        results = []
        for spec in job["runs"]:
            with np.load(spec["outputs"]) as data:
                results.append({name: data[name] for name in data.files})
        return results


def run_artifact_emulated(
    artifact_dir: str | Path,
    inputs: np.ndarray | str | Path,
    backend: str = "auto",
    timeout: float = DEFAULT_TIMEOUT_S,
) -> dict[str, np.ndarray]:
    """Run an exported artifact (docs/artifact.md) through the runtime as an aarch64 board would, under qemu.

    The emulated side runs `lbdeploy.runtime.testing.artifact_runner run`: the runtime's own artifact checks
    and backend, our aarch64 kernel library when the artifact carries one. Compare the result with
    the same artifact run on x86 (or with PyTorch) to check a whole exported network on ARM.

    Args:
        artifact_dir: the exported folder.
        inputs: the model input as an array, or the path of a .npy file holding it (NCHW float32,
            already preprocessed as the manifest's `input` says).
        backend: the runtime backend name ("auto": the manifest's).
        timeout: seconds for the emulated run.
    Returns:
        The model outputs by name.
    Raises:
        LbdeployError: the same error class the runtime raised on the emulated side (ArtifactError,
            KernelLibraryError, ...), its message marked as coming from the aarch64 runtime.
        BackendUnavailable: the lane cannot be built here.
        subprocess.CalledProcessError: the emulated process failed in another way.
    """
    with tempfile.TemporaryDirectory(prefix="lbdeploy-arm-") as tmp:
        array = np.load(inputs) if isinstance(inputs, (str, Path)) else np.asarray(inputs)
        np.save(Path(tmp) / "input.npy", array)
        return _run_runner("run", artifact_dir, Path(tmp) / "input.npy", Path(tmp), backend, timeout)


def predict_emulated(
    artifact_dir: str | Path,
    image: str | Path,
    backend: str = "auto",
    timeout: float = DEFAULT_TIMEOUT_S,
) -> dict[str, np.ndarray]:
    """Estimate the pose in `image` with `lbdeploy.runtime.Predictor` on the artifact, as an aarch64 board would.

    Returns:
        keypoints [N, J, 2], scores [N, J], centers [N, 2] and scales [N] by name.
    Raises:
        The same as `run_artifact_emulated`.
    """
    with tempfile.TemporaryDirectory(prefix="lbdeploy-arm-") as tmp:
        return _run_runner("predict", artifact_dir, Path(image).resolve(), Path(tmp), backend, timeout)


def _run_runner(mode: str, artifact_dir, source: Path, folder: Path, backend: str, timeout: float) -> dict:
    """Run `artifact_runner MODE` in the lane; its saved arrays by name, or its error re-raised here."""
    args = [mode, str(Path(artifact_dir).resolve()), str(source), str(folder / "output.npz"), backend]
    done = run_arm_python(["-m", "lbdeploy.runtime.testing.artifact_runner", *args], timeout=timeout, check=False)
    if done.returncode == artifact_runner.ERROR_EXIT_CODE:
        raise _runtime_error(done.stderr)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    with np.load(folder / "output.npz") as data:
        return {name: data[name] for name in data.files}


def _runtime_error(stderr: str) -> errors.LbdeployError:
    """Rebuild the LbdeployError the emulated runtime reported as `ErrorClass: message`."""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "LbdeployError: (no message)"
    name, _, message = last.partition(": ")
    error_class = getattr(errors, name, None)
    if not (isinstance(error_class, type) and issubclass(error_class, errors.LbdeployError)):
        error_class, message = errors.LbdeployError, last
    return error_class(f"{message} (raised by the aarch64 runtime in the emulated ARM lane)")
