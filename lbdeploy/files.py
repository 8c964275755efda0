"""Files replaced whole: written to a temporary sibling, then renamed over the target.

A crash, Ctrl-C or a full disk midway leaves the old file (or none) and no half-written one;
readers never see a partial file. For whole folders see exporters/atomic.py.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def replace_file(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(temporary)` on a new file beside `path`, then rename it to `path`.

    The file gets ordinary permissions (0666 less the umask), as `open` would give it. The
    temporary is removed if `write` or the rename fails; the error propagates.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private
        write(Path(temporary))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def replace_bytes(path: Path, data: bytes) -> Path:
    """Replace `path` whole with `data` (see `replace_file`)."""
    return replace_file(path, lambda temporary: temporary.write_bytes(data))
