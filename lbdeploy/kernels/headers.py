"""Locating the ONNX Runtime C/C++ headers our custom-op library compiles against.

The onnxruntime wheel ships no headers. `find_ort_headers` looks, in order, at: an explicit
folder; env ORT_INCLUDE_DIR; an ONNX Runtime install named by env ORT_HOME (a release archive
or prefix with include/); the header cache ($LBDEPLOY_CACHE/ort-headers or <repo>/.cache/ort-headers);
and finally runs scripts/fetch-ort-headers.sh to fill that cache from Debian's
libonnxruntime-dev. Add another source as one more candidate in `_candidates`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lbdeploy.errors import KernelLibraryError

REPO_ROOT = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = REPO_ROOT / "scripts" / "fetch-ort-headers.sh"
REQUIRED_HEADERS = ("onnxruntime_c_api.h", "onnxruntime_cxx_api.h")


def header_cache_dir() -> Path:
    """Where fetched headers are cached: $LBDEPLOY_CACHE/ort-headers, else <repo>/.cache/ort-headers."""
    cache = os.environ.get("LBDEPLOY_CACHE")
    return Path(cache) / "ort-headers" if cache else REPO_ROOT / ".cache" / "ort-headers"


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


def find_ort_headers(ort_include: str | Path | None = None, fetch: bool = True) -> Path:
    """The folder holding onnxruntime_c_api.h and onnxruntime_cxx_api.h.

    Args:
        ort_include: a folder to use first (as ORT_INCLUDE_DIR would).
        fetch: run scripts/fetch-ort-headers.sh when nothing else has the headers.
    Returns:
        The include folder.
    Raises:
        KernelLibraryError: a named folder lacks the headers, or none can be found or fetched.
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
    cached = header_cache_dir() / "hdr" / "usr" / "include" / "onnxruntime"
    if _has_headers(cached):
        return cached
    if not fetch or not FETCH_SCRIPT.is_file():
        raise KernelLibraryError(
            "ONNX Runtime headers not found: set ORT_INCLUDE_DIR to a folder with onnxruntime_c_api.h "
            "(e.g. include/ of an onnxruntime release archive) or run scripts/fetch-ort-headers.sh"
        )
    return _fetch(header_cache_dir())


def _fetch(cache: Path) -> Path:
    try:
        result = subprocess.run(["bash", str(FETCH_SCRIPT), str(cache)], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise KernelLibraryError(f"could not run {FETCH_SCRIPT}: {err}; set ORT_INCLUDE_DIR instead") from err
    folder = Path(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else None
    if result.returncode != 0 or folder is None or not _has_headers(folder):
        tail = " | ".join(result.stderr.strip().splitlines()[-3:])
        raise KernelLibraryError(
            f"fetching the ONNX Runtime headers failed ({tail or 'no output'}); "
            "set ORT_INCLUDE_DIR to a folder with onnxruntime_c_api.h"
        )
    return folder
