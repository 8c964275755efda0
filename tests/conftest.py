"""Shared pytest fixtures for the lbdeploy test suite."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

FILE_SECONDS = Path(__file__).with_name("file_seconds.json")


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist (`make test` runs `-n auto`), give each worker its share of the cores.

    torch, OpenMP and TVM otherwise start one thread per core in every worker, and threads that
    spin-wait on cores taken by another worker multiply the CPU time (20 calibration tests: 15 s of
    CPU with one thread each, over 3 min without, on the shared 2-core VM). Set before any test
    module imports torch; subprocesses inherit it; an explicit `threads=` still wins.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TVM_NUM_THREADS"):
            os.environ.setdefault(name, str(max(1, cores // workers)))


_share_the_cores_between_workers()


TRACE_CACHE = pytest.StashKey[str]()


def pytest_configure(config):
    """Start the run with an empty trace cache of its own (exporters/trace_cache.py), shared by the
    xdist workers, which inherit the variable: each network the tests export is traced once per run,
    and never taken from a user's cache or an earlier run."""
    if hasattr(config, "workerinput"):
        return
    folder = tempfile.mkdtemp(prefix="lbdeploy-test-traces-")
    config.stash[TRACE_CACHE] = folder
    os.environ["LBDEPLOY_TRACE_CACHE"] = folder


def pytest_unconfigure(config):
    """Remove the run's trace cache."""
    folder = config.stash.get(TRACE_CACHE, None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(items):
    """Run the longest test files first (longest-processing-time order).

    `make test` hands whole files to the workers in collection order (--dist loadfile
    --no-loadscope-reorder), so the long files start early and the workers finish together instead
    of one waiting while the other runs a long file that came last. The seconds per file come from a
    previous run (tests/file_seconds.json, `make test-durations`); a file not listed there goes
    after the listed ones, in its usual place. Tests keep their order within a file.
    """
    items[:] = longest_files_first(items, json.loads(FILE_SECONDS.read_text()) if FILE_SECONDS.is_file() else {})


def longest_files_first(items: list, seconds: dict) -> list:
    """`items` (with .path) grouped by file, files by `seconds[file name]` descending, then as they came."""
    first_seen: dict = {}
    for item in items:
        first_seen.setdefault(item.path.name, len(first_seen))
    return sorted(items, key=lambda item: (-seconds.get(item.path.name, 0.0), first_seen[item.path.name]))


@pytest.fixture(scope="session")
def arm_python():
    """Path of the emulated aarch64 python (scripts/arm-lane.sh, built once and cached).

    Skips with the reason when the lane cannot be built here; fails instead under
    LBDEPLOY_REQUIRE_ARM=1 (CI), so a broken lane is never silently skipped there.
    """
    from lbdeploy.runtime.testing.arm_lane import arm_lane_required, probe_arm_lane

    lane = probe_arm_lane()
    if lane.python is None:
        if arm_lane_required():
            pytest.fail(f"LBDEPLOY_REQUIRE_ARM=1 but {lane.reason}")
        pytest.skip(lane.reason)
    return lane.python


@pytest.fixture(scope="session")
def library() -> str:
    """Path of our ONNX Runtime kernel library for this machine (built once and cached); skips
    with the reason when it cannot be built here (no compiler or ONNX Runtime headers)."""
    from lbdeploy.errors import KernelLibraryError
    from lbdeploy.kernels.build import build_ort_library

    try:
        return str(build_ort_library())
    except KernelLibraryError as err:
        pytest.skip(f"cannot build the kernel library here: {err}")


@pytest.fixture(scope="session")
def demo_artifact(tmp_path_factory):
    """The bundled demo LBRN-S (lbdeploy/data/demo.pt, trained on the synthetic set) exported for
    ONNX Runtime with standard ops (no kernel library to build); skips without torch."""
    pytest.importorskip("torch", reason="exporting the demo model needs torch (pip install lbdeploy[torch])")
    from pathlib import Path

    from lbdeploy.exporters.export import export_model

    folder = tmp_path_factory.mktemp("demo") / "artifact"
    export_model(Path(__file__).resolve().parents[1] / "lbdeploy" / "data" / "demo.pt", folder, target="onnx",
                 ops="standard")
    return folder


@pytest.fixture(scope="session")
def scene_detector(tmp_path_factory):
    """The ONNX test detector of the synthetic scenes (runtime.testing.scene_detector)."""
    pytest.importorskip("onnx", reason="building the scene detector needs onnx")
    from lbdeploy.runtime.testing.scene_detector import write_scene_detector

    return write_scene_detector(tmp_path_factory.mktemp("detector") / "scene_det.onnx")


@pytest.fixture(scope="session")
def package_source(tmp_path_factory):
    """A copy of what the package is built from (pyproject, README, the five packages, cli.py), so that
    `pip install .` in a test leaves no build/ or *.egg-info in the checkout."""
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    copy = tmp_path_factory.mktemp("source") / "lbdeploy"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md", "cli.py"):
        shutil.copy2(repo / name, copy / name)
    for name in ("lbdeploy", "runtime", "exporters", "workflows", "commands"):
        shutil.copytree(repo / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    return copy
