"""Locating the ONNX Runtime C/C++ headers our custom-op library compiles against.

The onnxruntime wheel ships no headers, so lbdeploy ships the few it needs (the C and C++ API
headers, MIT, see lbdeploy/kernels/ort_headers/LICENSE) as package data: an installed package
(not only a checkout) builds its kernels. `find_ort_headers` looks, in order, at: an explicit
folder; env ORT_INCLUDE_DIR; an ONNX Runtime install named by env ORT_HOME (a release archive or
prefix with include/); the bundled headers. The C API is versioned (ORT_API_VERSION): headers at
version N work with every runtime that serves API >= N. To refresh the bundled copy, run
scripts/fetch-ort-headers.sh and copy the REQUIRED_HEADERS it fetched into BUNDLED_HEADERS.
"""

from __future__ import annotations

import os
from pathlib import Path

from lbdeploy.errors import KernelLibraryError

BUNDLED_HEADERS = Path(__file__).resolve().parent / "ort_headers"
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
    if not _has_headers(BUNDLED_HEADERS):
        raise KernelLibraryError(f"the package's ONNX Runtime headers are missing from {BUNDLED_HEADERS}; reinstall "
                                 "lbdeploy or set ORT_INCLUDE_DIR to a folder with onnxruntime_c_api.h")
    return BUNDLED_HEADERS
