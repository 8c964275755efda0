"""Where lbdeploy keeps what it can make again: $LBDEPLOY_CACHE, else ~/.cache/lbdeploy.

Each kind of entry has a folder of its own there: `kernels` (compiled kernel libraries,
lbdeploy/kernels/build.py), `ort-headers` (fetched ONNX Runtime headers, lbdeploy/kernels/headers.py)
and `traces` (traced ONNX graphs, exporters/trace_cache.py). Deleting any of them only costs time.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_folder(kind: str) -> Path:
    """The folder of cache entries of `kind`: $LBDEPLOY_CACHE/<kind>, else ~/.cache/lbdeploy/<kind>."""
    root = os.environ.get("LBDEPLOY_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "lbdeploy") / kind
