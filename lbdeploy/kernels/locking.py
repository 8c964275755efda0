"""One process at a time fills a cache entry (the ONNX Runtime header fetch, a kernel build).

Two exports, two servers or two test workers may ask for the same library at once; without a
lock both would compile into the cache (and fetch the headers into one apt folder). `cache_lock`
takes an advisory `fcntl` lock on `<folder>.lock` beside the entry; the second process waits and
then finds the entry made. The lock file stays (an empty file); the lock dies with its process.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def cache_lock(folder: Path):
    """Hold an exclusive lock for the cache entry `folder` (which need not exist yet)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
