"""Where commands write files: one convention for every output path (--json, --draw, --plot, -o).

- Missing parent folders are created (`infer --draw new/p.png`, `export -o new/out`,
  `profile --plot new/p.png` and video outputs alike).
- A path that cannot be written is refused up front, before any work, with one line: a parent that
  is a file, an existing folder given where a file is wanted (or a file where a folder is wanted),
  an image name whose suffix Pillow cannot write.
- `-` as a JSON path means standard output.
"""

from __future__ import annotations

from pathlib import Path

from lbdeploy.errors import InputError

STDOUT = "-"


def _file_ancestor(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` when it is not a folder (a file blocks the path)."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _parents_are_folders(target: Path, option: str) -> Path:
    blocker = _file_ancestor(target)
    if blocker is not None:
        raise InputError(f"{option} {target}: {blocker} is a file, not a folder")
    return target


def check_output_file(path: str | Path, option: str) -> Path:
    """Refuse `path` as a file to write when it cannot be one (before any work is done).

    Args:
        path: the file the command will write; option: its flag, named in the message.
    Returns:
        `path` as a Path.
    Raises:
        InputError: `path` is an existing folder, or one of its parents is a file.
    """
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name inside it")
    return _parents_are_folders(target, option)


def check_output_folder(path: str | Path, option: str) -> Path:
    """Refuse `path` as a folder to create or fill when it cannot be one (before any work is done).

    Raises:
        InputError: `path` is an existing file, or one of its parents is a file.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise InputError(f"{option} {path} is a file; give a folder")
    return _parents_are_folders(target, option)


def check_image_file(path: str | Path, option: str) -> Path:
    """`check_output_file` for an image, whose suffix must name a format Pillow writes (.png, .jpg, ...).

    Raises:
        InputError: as `check_output_file`, or the suffix is missing or not a writable image format.
    """
    from PIL import Image

    target = check_output_file(path, option)
    Image.init()
    if Image.registered_extensions().get(target.suffix.lower()) not in Image.SAVE:
        raise InputError(f"{option} {path}: {target.suffix or 'no suffix'} is not an image format that can be "
                         "written; use .png or .jpg (or a folder ending in /)")
    return target


def with_parents(path: str | Path) -> Path:
    """`path` after creating its missing parent folders (what every output gets when written)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def write_json_text(path: str | Path | None, text: str, echo) -> bool:
    """Write `text` to `path`, or hand it to `echo` (standard output) when `path` is None or `-`.

    Returns:
        True when a file was written.
    """
    if path is None or str(path) == STDOUT:
        echo(text)
        return False
    with_parents(path).write_text(text + "\n")
    return True
