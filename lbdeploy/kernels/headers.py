"""Locating the ONNX Runtime C/C++ headers our custom-op library compiles against.

The onnxruntime wheel ships no headers. `find_ort_headers` looks, in order, at: an explicit
folder; env ORT_INCLUDE_DIR; an ONNX Runtime install named by env ORT_HOME (a release archive or
prefix with include/); the user cache; and else fetches Debian's libonnxruntime-dev package into
the cache with fetch_ort_headers.sh, which ships inside the package, so an installed package (not
only a checkout) builds its kernels. The C API is versioned (ORT_API_VERSION): headers at version
N work with every runtime that serves API >= N.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lbdeploy.cache import cache_folder
from lbdeploy.errors import KernelLibraryError
from lbdeploy.kernels.locking import cache_lock

FETCH_SCRIPT = Path(__file__).resolve().parent / "fetch_ort_headers.sh"
FETCH_TIMEOUT_S = 600
REQUIRED_HEADERS = ("onnxruntime_c_api.h", "onnxruntime_cxx_api.h")


def _has_headers(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED_HEADERS)


def _candidates(explicit: str | Path | None) -> list[tuple[str, Path]]:
    found = []
    if explicit:
        found.append(("the ort_include argument", Path(explicit)))
    if os.environ.get("ORT_INCLUDE_DIR"):
        found.append(("ORT_INCLUDE_DIR", Path(os.environ["ORT_INCLUDE_DIR"])))
    if os.environ.get("ORT_HOME"):
        home = Path(os.environ["ORT_HOME"])
        for sub in ("include", "include/onnxruntime", "include/onnxruntime/core/session"):
            found.append(("ORT_HOME", home / sub))
    return found


def find_ort_headers(ort_include: str | Path | None = None) -> Path:
    """The folder holding onnxruntime_c_api.h and onnxruntime_cxx_api.h.

    Args:
        ort_include: a folder to use first (as ORT_INCLUDE_DIR would).
    Returns:
        The include folder.
    Raises:
        KernelLibraryError: a named folder lacks the headers, or the package's bundled copy is missing.
    """
    candidates = _candidates(ort_include)
    for source, folder in candidates:
        if _has_headers(folder):
            return folder
    named = [(source, folder) for source, folder in candidates if source != "ORT_HOME"]
    if named:
        source, folder = named[0]
        raise KernelLibraryError(f"{source} points to {folder}, which has no {' / '.join(REQUIRED_HEADERS)}")
    if candidates:
        raise KernelLibraryError(f"ORT_HOME={os.environ['ORT_HOME']} has no include/ folder with onnxruntime_c_api.h")
    return fetch_ort_headers()


def header_cache() -> Path:
    """Where fetched headers live: $LBDEPLOY_CACHE/ort-headers, else ~/.cache/lbdeploy/ort-headers."""
    return cache_folder("ort-headers")


def fetch_ort_headers() -> Path:
    """The cached headers, fetched first from Debian's libonnxruntime-dev when the cache has none.

    Raises:
        KernelLibraryError: apt-get / dpkg-deb are missing or the download failed (the message says
            how to point ORT_INCLUDE_DIR at headers instead).
    """
    cached = header_cache() / "hdr" / "usr" / "include" / "onnxruntime"
    if _has_headers(cached):
        return cached
    with cache_lock(header_cache()):  # another process may be fetching into the same folder
        if _has_headers(cached):
            return cached
        try:
            done = subprocess.run(["bash", str(FETCH_SCRIPT), str(header_cache())], capture_output=True, text=True,
                                  timeout=FETCH_TIMEOUT_S)
            ok, reason = done.returncode == 0, (done.stderr.strip().splitlines() or ["no output"])[-1]
        except (OSError, subprocess.TimeoutExpired) as err:
            ok, reason = False, str(err)
    if not ok or not _has_headers(cached):
        raise KernelLibraryError(f"could not fetch the ONNX Runtime headers ({reason}); set ORT_INCLUDE_DIR to a "
                                 "folder holding onnxruntime_c_api.h and onnxruntime_cxx_api.h")
    return cached
