"""Writing an artifact folder so that nothing is ever lost or left half-written.

`atomic_folder(out_dir, force)` yields a temporary sibling folder; only when the block succeeds
does it take `out_dir`'s place:

- a new `out_dir` appears by one rename;
- an existing one is replaced only with `force`, and only when it is an lbdeploy artifact or an
  empty folder (anything else is refused: a user's folder is never deleted). The replacement is
  one atomic exchange (Linux `renameat2(RENAME_EXCHANGE)`), so at every instant `out_dir` is the
  old or the new artifact; where the call is missing, two renames close together;
- on any error, Ctrl-C or SIGTERM the temporary folder is removed; temporary folders of
  processes that died (SIGKILL, power loss) are removed by the next export to the same place.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from lbdeploy.artifact import is_artifact_folder
from lbdeploy.errors import ExportError

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_TEMP = re.compile(r"\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where that is unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """Remove temporary folders left beside `out_dir` by exports whose process is gone.

    Returns:
        The folders removed.
    """
    removed = []
    if not out_dir.parent.is_dir():
        return removed
    for entry in out_dir.parent.iterdir():
        match = _TEMP.match(entry.name)
        if match and match["name"] == out_dir.name and entry.is_dir() and not _alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _check_replaceable(out_dir: Path, force: bool) -> None:
    cwd = Path.cwd().resolve()
    if out_dir.resolve() == cwd or out_dir.resolve() in cwd.parents:
        raise ExportError(f"-o {out_dir} is the current folder or holds it; write the artifact to a new folder, "
                          "e.g. -o out/")
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not force:
        raise ExportError(f"{out_dir} already exists; choose another output folder, or replace it "
                          "(--force on the command line, force=True from Python)")
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise ExportError(f"{out_dir} is not a folder; --force replaces only an lbdeploy artifact or an empty folder")
    if not is_artifact_folder(out_dir) and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir} is not an lbdeploy artifact and not empty; --force replaces only an artifact "
                          "or an empty folder, so nothing was touched: choose another -o")


@contextmanager
def _removed_on_sigterm():
    """Turn SIGTERM into KeyboardInterrupt while exporting, so cleanup runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def atomic_folder(out_dir, force: bool):
    """Yield a temporary sibling folder that replaces `out_dir` only if the block succeeds.

    Raises:
        ExportError: `out_dir` exists without `force`, or is not something `force` may replace.
    """
    out_dir = Path(os.path.abspath(out_dir))
    _check_replaceable(out_dir, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp makes it private; the artifact should be a normal folder
    try:
        with _removed_on_sigterm():
            yield work
            if not out_dir.exists():
                os.replace(work, out_dir)
            elif _exchange(work, out_dir):
                shutil.rmtree(work, ignore_errors=True)  # now holds the previous artifact
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-{os.getpid()}-", dir=out_dir.parent))
                os.replace(out_dir, old / "previous")
                os.replace(work, out_dir)
                shutil.rmtree(old, ignore_errors=True)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
