"""Shared pytest fixtures for the lbdeploy test suite."""

import pytest


@pytest.fixture(scope="session")
def arm_python():
    """Path of the emulated aarch64 python (scripts/arm-lane.sh, built once and cached).

    Skips with the reason when the lane cannot be built here; fails instead under
    LBDEPLOY_REQUIRE_ARM=1 (CI), so a broken lane is never silently skipped there.
    """
    from runtime.testing.arm_lane import arm_lane_required, probe_arm_lane

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
