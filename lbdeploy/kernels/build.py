"""Build libternary_ort.so, our ONNX Runtime custom-op library for ai.lbdeploy::TernaryConv.

    python -m lbdeploy.kernels.build                 # for this machine; prints the library path
    python -m lbdeploy.kernels.build --arch aarch64 -o out/   # cross-compiled (NEON)

Sources: lbdeploy/kernels/core/*.cc (runtime-independent math; one tile-kernel file per
instruction set) and lbdeploy/kernels/ort/*.cc (the ONNX Runtime wrapper). Builds are cached under
$LBDEPLOY_CACHE/kernels (default ~/.cache/lbdeploy/kernels), keyed by architecture and a hash of
sources, headers, compiler and flags. To support another architecture, add a `_Toolchain` to
`TOOLCHAINS` listing its compiler and tile-kernel files.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lbdeploy.cache import cache_folder
from lbdeploy.errors import KernelLibraryError
from lbdeploy.kernels.elf import elf_arch, host_arch
from lbdeploy.kernels.headers import find_ort_headers
from lbdeploy.kernels.locking import cache_lock

KERNELS_DIR = Path(__file__).resolve().parent
CORE_DIR = KERNELS_DIR / "core"
ORT_DIR = KERNELS_DIR / "ort"
LIBRARY_NAME = "libternary_ort.so"

COMMON_SOURCES = (
    "core/ternary_conv.cc", "core/plan.cc", "core/reference.cc", "core/tile_scalar.cc", "core/conv_common.cc",
    "core/qternary_conv.cc", "core/requantize.cc", "core/qtile_scalar.cc", "ort/ternary_conv_op.cc",
    "ort/qternary_conv_op.cc",
)
CXXFLAGS = ("-std=c++17", "-O3", "-DNDEBUG", "-fPIC", "-fvisibility=hidden", "-fvisibility-inlines-hidden", "-Wall", "-Wextra")
LDFLAGS = ("-shared", "-static-libstdc++", "-static-libgcc", "-Wl,-z,defs", "-pthread")

# Packages that provide a missing compiler (Debian / Ubuntu names).
_COMPILER_PACKAGES = {"g++": "g++", "aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu", "x86_64-linux-gnu-g++": "g++-x86-64-linux-gnu"}


@dataclass(frozen=True)
class _Toolchain:
    """How to build for one architecture: tile-kernel sources with their extra flags."""

    arch: str
    cross_compiler: str
    tile_sources: dict = field(default_factory=dict)  # path relative to kernels/ -> extra flags


TOOLCHAINS = {
    "x86_64": _Toolchain("x86_64", "x86_64-linux-gnu-g++", {
        "core/tile_avx512.cc": ("-mavx512f",), "core/tile_avx2.cc": ("-mavx2",),
        "core/qtile_avx512.cc": ("-mavx512f", "-mavx512bw"), "core/qtile_avx2.cc": ("-mavx2", "-mfma"),
    }),
    "aarch64": _Toolchain("aarch64", "aarch64-linux-gnu-g++", {"core/tile_neon.cc": (), "core/qtile_neon.cc": ()}),
}


def build_cache_dir() -> Path:
    """Root of cached builds: $LBDEPLOY_CACHE/kernels, else ~/.cache/lbdeploy/kernels."""
    return cache_folder("kernels")


def compiler_for(arch: str) -> str:
    """The C++ compiler for `arch`: $CXX (host only) or g++ natively, else <arch>-linux-gnu-g++.

    Raises:
        KernelLibraryError: the compiler is not installed (the message names the apt package).
    """
    toolchain = _toolchain(arch)
    if arch == host_arch():
        compiler = os.environ.get("CXX") or "g++"
    else:
        compiler = toolchain.cross_compiler
    if shutil.which(compiler) is None:
        package = _COMPILER_PACKAGES.get(compiler, compiler)
        raise KernelLibraryError(
            f"C++ compiler {compiler!r} for {arch} not found; install it with `apt-get install {package}`"
        )
    return compiler


def _toolchain(arch: str) -> _Toolchain:
    if arch not in TOOLCHAINS:
        raise KernelLibraryError(f"cannot build the kernel library for {arch!r}; supported: {', '.join(TOOLCHAINS)}")
    return TOOLCHAINS[arch]


def _units(toolchain: _Toolchain) -> list[tuple[str, tuple[str, ...]]]:
    return [(source, ()) for source in COMMON_SOURCES] + list(toolchain.tile_sources.items())


def _build_key(arch: str, compiler: str, include: Path, units) -> str:
    digest = hashlib.sha256()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    for part in (arch, compiler, *version, *CXXFLAGS, *LDFLAGS):
        digest.update(part.encode() + b"\0")
    headers = [*CORE_DIR.glob("*.h"), *ORT_DIR.glob("*.h")]
    sources = sorted({*(source for source, _ in units), *(p.relative_to(KERNELS_DIR).as_posix() for p in headers)})
    for source, flags in units:
        digest.update(f"{source}:{' '.join(flags)}".encode() + b"\0")
    for source in sources:
        digest.update((KERNELS_DIR / source).read_bytes())
    for header in ("onnxruntime_c_api.h", "onnxruntime_cxx_api.h", "onnxruntime_cxx_inline.h"):
        if (include / header).is_file():
            digest.update((include / header).read_bytes())
    return digest.hexdigest()[:16]


def _run_compiler(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if "error" in line] or result.stderr.splitlines()
        message = "\n".join(lines[:8])[:1500]
        raise KernelLibraryError(f"compiling the kernel library failed ({Path(command[-1]).name}):\n{message}")


def _compile(compiler: str, include: Path, units, work: Path) -> Path:
    include_flags = [f"-I{CORE_DIR}", f"-I{include}"]
    objects = []
    commands = []
    for source, flags in units:
        obj = work / (source.replace("/", "_") + ".o")
        objects.append(obj)
        commands.append([compiler, *CXXFLAGS, *flags, *include_flags, "-c", "-o", str(obj), str(KERNELS_DIR / source)])
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(_run_compiler, commands))
    library = work / LIBRARY_NAME
    _run_compiler([compiler, *LDFLAGS, "-o", str(library), *map(str, objects)])
    return library


def build_ort_library(arch: str | None = None, out_dir: str | Path | None = None, ort_include: str | Path | None = None,
                      progress=None) -> Path:
    """Build (or reuse from the cache) libternary_ort.so.

    Args:
        arch: "x86_64" or "aarch64"; None means this machine. Another architecture is
            cross-compiled with <arch>-linux-gnu-g++.
        out_dir: copy the library into this folder; None returns the cached file.
        ort_include: ONNX Runtime include folder (else see `find_ort_headers`).
        progress: called with a message when the library is compiled (not when it comes from the cache).
    Returns:
        Path of the library.
    Raises:
        KernelLibraryError: unknown architecture, missing compiler or headers, or a compile error.
    """
    arch = arch or host_arch()
    toolchain = _toolchain(arch)
    compiler = compiler_for(arch)
    include = find_ort_headers(ort_include)
    units = _units(toolchain)
    cached = build_cache_dir() / f"{arch}-{_build_key(arch, compiler, include, units)}" / LIBRARY_NAME
    if not cached.is_file():
        with cache_lock(cached.parent):  # another process may be building the same library
            if not cached.is_file():
                if progress:
                    progress(f"building the ONNX Runtime kernel library for {arch} (cached for the next export)")
                cached.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=cached.parent) as work:
                    built = _compile(compiler, include, units, Path(work))
                    if elf_arch(built) != arch:
                        raise KernelLibraryError(f"{compiler} produced a {elf_arch(built)} library, expected {arch}")
                    os.replace(built, cached)
    if out_dir is None:
        return cached
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(cached, out / LIBRARY_NAME)
    return out / LIBRARY_NAME


def main(argv: list[str] | None = None) -> int:
    """`python -m lbdeploy.kernels.build`: build the library and print its path."""
    parser = argparse.ArgumentParser(
        prog="python -m lbdeploy.kernels.build",
        description="Build libternary_ort.so (ONNX Runtime custom op ai.lbdeploy::TernaryConv).",
        epilog="Example: python -m lbdeploy.kernels.build --arch aarch64 -o out/",
    )
    parser.add_argument("--arch", choices=sorted(TOOLCHAINS), default=None, help="target architecture (default: this machine)")
    parser.add_argument("-o", "--out-dir", default=None, help="copy the library here (default: print the cached path)")
    parser.add_argument("--ort-include", default=None, help="ONNX Runtime include folder (default: ORT_INCLUDE_DIR, ORT_HOME, the bundled headers)")
    args = parser.parse_args(argv)
    try:
        path = build_ort_library(arch=args.arch, out_dir=args.out_dir, ort_include=args.ort_include)
    except KernelLibraryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
