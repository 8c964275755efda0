"""Load exactly what was verified: private copies of artifact files, hashed as they are copied.

Checking a file's sha256 and then handing its path to ONNX Runtime, TVM or TensorRT opens it
twice; a file swapped in between would run unverified. `private_copies` instead reads each file
once, hashes those very bytes, compares them with the manifest and writes them into a fresh
private folder (mode 0700) that the backend then loads from; the folder is removed when the
block ends (a loaded library or session keeps what it mapped).

    with private_copies(root, manifest["files"], ["model.onnx", "kernels/libternary_ort.so"]) as copies:
        session = ort.InferenceSession(str(copies["model.onnx"]), ...)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from lbdeploy.artifact import listed_file
from lbdeploy.errors import ArtifactError

_CHUNK = 1 << 20


def _copy_hashed(source: Path, dest: Path) -> str:
    """Copy `source` to `dest` through one open file descriptor; the sha256 of the bytes copied."""
    digest = hashlib.sha256()
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(source, flags)
    try:
        with os.fdopen(fd, "rb", closefd=False) as reader, open(dest, "xb") as writer:
            for block in iter(lambda: reader.read(_CHUNK), b""):
                digest.update(block)
                writer.write(block)
    finally:
        os.close(fd)
    return digest.hexdigest()


def copy_verified(root, relative: str, files: dict, dest_dir: Path, what: str = "file") -> Path:
    """Copy one listed artifact file into `dest_dir` (same relative path), refusing it unless its bytes match.

    Returns:
        The copy. Raises: ArtifactError: unlisted, outside the folder, missing or modified.
    """
    source = listed_file(root, relative, files, what)
    dest = dest_dir / relative
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        actual = _copy_hashed(source, dest)
    except OSError as err:
        raise ArtifactError(f"artifact {what} {relative!r} in {root} cannot be read ({err.strerror}); "
                            "refusing to load it") from None
    if actual != files[relative]:
        dest.unlink()
        raise ArtifactError(f"artifact {what} {relative!r} in {root} was modified (sha256 {actual[:12]}..., manifest "
                            f"says {str(files[relative])[:12]}...); re-export the model or restore the file")
    return dest


@contextmanager
def private_folder():
    """A fresh folder only this user can enter, removed with everything in it when the block ends."""
    folder = Path(tempfile.mkdtemp(prefix="lbdeploy-verified-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def private_copies(root, files: dict, relatives: list[str], what: str = "file"):
    """Yield {relative: private copy} of the listed artifact files, each verified against `files`.

    Raises:
        ArtifactError: a file is unlisted, outside the folder, missing or does not match its sha256.
    """
    with private_folder() as folder:
        yield {relative: copy_verified(root, relative, files, folder, what) for relative in relatives}
