"""The installed (not editable) package exports: kernels build from package data, for every architecture.

A fresh venv gets lbdeploy with `pip install --no-deps .` (a wheel built from this checkout, as
`pip install ".[all]"` would install it). Its dependencies come from the development venv through
a .pth line naming that venv's site-packages: installing torch, TVM and ONNX Runtime again from
PyPI would take minutes and test pip, not lbdeploy. A path from a .pth line is not a site dir,
so the development venv's own .pth files (its editable install of a checkout) are not run: the
test asserts that `lbdeploy` is imported from the new venv. The export runs from another folder
with an empty cache, so the network is traced by the installed package and the custom-op library
is compiled from the installed sources and the bundled ONNX Runtime headers.
"""

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "lbdeploy" / "data" / "demo.pt"


@pytest.fixture(scope="module")
def installed(tmp_path_factory, package_source) -> tuple[Path, dict, Path]:
    """(bin/ of a venv with lbdeploy installed from a wheel, the environment to run it in, its site dir)."""
    root = tmp_path_factory.mktemp("installed")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "dev-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(package_source)], check=True, timeout=600, cwd=root)
    wheel = next(wheels.glob("lbdeploy-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--target", str(purelib), str(wheel)], check=True, timeout=600, cwd=root)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "LBDEPLOY_TRACE_CACHE")}
    env["LBDEPLOY_CACHE"] = str(root / "cache")
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import lbdeploy, lbdeploy.cli; print(lbdeploy.__file__)"],
                           check=True, capture_output=True, text=True, env=env, cwd=root).stdout.strip()
    assert where.startswith(str(purelib)), where
    return venv / "bin", env, purelib


def test_wheel_installs_one_top_level_name(installed):
    """Installed, everything lives under `lbdeploy.*`: no generic `runtime` or `cli` beside it."""
    _, _, purelib = installed
    (dist_info,) = purelib.glob("lbdeploy-*.dist-info")
    assert (dist_info / "top_level.txt").read_text().split() == ["lbdeploy"]
    # the backend registry of an installed lbdeploy is its entry points (no pyproject.toml beside the package)
    points = (dist_info / "entry_points.txt").read_text()
    assert "[lbdeploy.backends]" in points and "ort = lbdeploy.exporters.backends.ort:BACKEND" in points
    assert not (purelib / "pyproject.toml").exists()
    installed_names = {p.name for p in purelib.iterdir()} - {dist_info.name, "dev-deps.pth", "bin", "__pycache__"}
    assert installed_names == {"lbdeploy"}
    for sub in ("runtime", "exporters", "workflows", "commands"):
        assert (purelib / "lbdeploy" / sub / "__init__.py").is_file()
        assert not (purelib / "lbdeploy" / sub).is_symlink()
    assert (purelib / "lbdeploy" / "cli.py").is_file()


def test_wheel_carries_every_architectures_kernel_sources(installed):
    """Each toolchain's sources and headers are package data, so an installed lbdeploy builds the
    library for any architecture (the x86 build runs below; the aarch64 cross build of the same
    sources runs in tests/test_ort_kernel.py)."""
    from lbdeploy.kernels.build import COMMON_SOURCES, TOOLCHAINS

    _, _, purelib = installed
    kernels = purelib / "lbdeploy" / "kernels"
    needed = {*COMMON_SOURCES, *(source for toolchain in TOOLCHAINS.values() for source in toolchain.tile_sources)}
    assert {"core/tile_neon.cc", "core/qtile_neon.cc", "core/tile_avx512.cc"} <= needed
    assert all((kernels / source).is_file() for source in needed), sorted(s for s in needed if not (kernels / s).is_file())
    checkout = Path(__file__).resolve().parent.parent / "lbdeploy" / "kernels"
    headers = {p.relative_to(checkout).as_posix() for p in checkout.glob("*/*.h")}
    assert headers and all((kernels / header).is_file() for header in headers)


@pytest.mark.slow
def test_installed_package_exports(installed, tmp_path):
    bin_dir, env, _ = installed
    result = subprocess.run([str(bin_dir / "python"), "-m", "lbdeploy.cli", "export", str(DEMO), "--target", "x86", "-o", "out"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "parity passed" in result.stdout
    assert (tmp_path / "out" / "kernels" / "libternary_ort.so").is_file()
    built = Path(env["LBDEPLOY_CACHE"]).glob("kernels/*/libternary_ort.so")
    assert any(built), "the kernel library was built from the installed package"
    assert "trace cache" not in result.stderr and any(Path(env["LBDEPLOY_CACHE"]).glob("traces/*.onnx"))
