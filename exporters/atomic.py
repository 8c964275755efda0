"""Writing an artifact folder so that nothing is ever lost or left half-written.

`atomic_folder(out_dir, force)` yields a temporary sibling folder; only when the block succeeds
does it take `out_dir`'s place:

- a new `out_dir` appears by one rename that refuses to replace anything (Linux
  `renameat2(RENAME_NOREPLACE)`): a folder that appeared at `out_dir` during the export (a user's,
  or another export's) is never replaced without `force`, and the export is refused instead;
- an existing one is replaced only with `force`, and only when it is provably an lbdeploy
  artifact (a valid manifest and nothing in the folder that the manifest does not list:
  `lbdeploy.artifact.stray_entries`) or an empty folder. It is judged when the export starts and
  again at the swap; the replacement is one atomic exchange (`renameat2(RENAME_EXCHANGE)`), and
  what was swapped out is judged a third time, under its private temporary name, before it is
  deleted: if a user wrote into it in between, it is swapped back and the export refused;
- on any error, Ctrl-C or SIGTERM the temporary folder is removed; temporary folders of
  processes that died (SIGKILL, power loss) are removed by the next export to the same place,
  but only those that carry this export's marker file (`PARTIAL_MARKER`, holding the folder's
  own name): a user's folder that merely looks like one is never touched.
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

from lbdeploy.artifact import PARTIAL_MARKER, stray_entries
from lbdeploy.errors import ExportError

_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_TEMP = re.compile(r"\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-")


def _renameat2(a: Path, b: Path, flags: int) -> bool:
    """renameat2(a, b, flags); False where the call or the flag is unsupported (other OSErrors raise)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where that is unsupported."""
    return _renameat2(a, b, _RENAME_EXCHANGE)


def _move_into_place(work: Path, out_dir: Path) -> None:
    """Rename `work` to `out_dir`, refusing (ExportError) when anything exists at `out_dir` by then."""
    try:
        if _renameat2(work, out_dir, _RENAME_NOREPLACE):
            return
        # no RENAME_NOREPLACE here: rename(2) still refuses a non-empty folder and any file; an
        # empty folder that appeared in this instant is the only thing it may replace
        if out_dir.exists() or out_dir.is_symlink():
            raise FileExistsError(errno.EEXIST, "exists", str(out_dir))
        os.rename(work, out_dir)
    except OSError as err:
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
            raise
        raise ExportError(f"{out_dir} appeared while exporting (another export, or a user's folder); it was left "
                          "untouched and this export was not kept: run it again with another -o") from err


def _written_meanwhile(reason: str) -> ExportError:
    return ExportError(f"{reason} (written while exporting); it was left in place and this export was not kept")


def _mark(folder: Path) -> None:
    (folder / PARTIAL_MARKER).write_text(folder.name)


def _is_marked(folder: Path) -> bool:
    """True when `folder` is a real folder holding our marker with its own name (an export made it)."""
    marker = folder / PARTIAL_MARKER
    try:
        return (not folder.is_symlink() and folder.is_dir() and not marker.is_symlink()
                and marker.read_text() == folder.name)
    except (OSError, UnicodeDecodeError):
        return False


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
        if match and match["name"] == out_dir.name and not _alive(int(match["pid"])) and _is_marked(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _not_ours(folder: Path) -> str | None:
    """Why `--force` may not delete `folder`, or None when it is an empty folder or provably an artifact."""
    if folder.is_symlink() or not folder.is_dir():
        return f"{folder} is not a folder"
    if not any(folder.iterdir()):
        return None
    strays = stray_entries(folder)
    if strays is None:
        return f"{folder} is not an lbdeploy artifact and not empty"
    if strays:
        shown = ", ".join(strays[:3]) + (f" and {len(strays) - 3} more" if len(strays) > 3 else "")
        return f"{folder} holds files its manifest does not list ({shown})"
    return None


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
    reason = _not_ours(out_dir)
    if reason:
        raise ExportError(f"{reason}; --force replaces only an lbdeploy artifact (exactly the files its manifest "
                          "lists) or an empty folder, so nothing was touched: choose another -o")


def _replace(work: Path, out_dir: Path, force: bool) -> None:
    """Put `work` at `out_dir`, judging what is there now (not what was there when the export began).

    What is swapped out is judged again under a private name before it is deleted; if it is not
    ours any more (a user wrote into it in the meantime) it goes back and ExportError is raised.
    """
    if not force or (not out_dir.exists() and not out_dir.is_symlink()):
        _move_into_place(work, out_dir)
        return
    _check_replaceable(out_dir, force)
    if _exchange(work, out_dir):
        reason = _not_ours(work)  # `work` now holds what was at out_dir
        if reason is None:
            shutil.rmtree(work, ignore_errors=True)
            return
        _exchange(work, out_dir)  # give it back; `work` holds the new artifact again, removed by the caller
        raise _written_meanwhile(reason)
    holder = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-{os.getpid()}-", dir=out_dir.parent))
    previous = holder / "previous"
    os.replace(out_dir, previous)
    reason = _not_ours(previous)
    if reason:
        os.rename(previous, out_dir)
        holder.rmdir()
        raise _written_meanwhile(reason)
    _mark(holder)  # a crash from here on leaves a folder that the next export may clean
    _move_into_place(work, out_dir)
    shutil.rmtree(holder, ignore_errors=True)


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
    _mark(work)
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp makes it private; the artifact should be a normal folder
    try:
        with _removed_on_sigterm():
            yield work
            (work / PARTIAL_MARKER).unlink()
            _replace(work, out_dir, force)
    finally:
        if _is_marked(work) or (work.is_dir() and not work.is_symlink() and _not_ours(work) is None):
            shutil.rmtree(work, ignore_errors=True)
