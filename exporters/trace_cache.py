"""Traced ONNX graphs kept for the next export of the same network: re-exporting skips the trace.

Tracing with torch's dynamo exporter costs about 20 ms a graph node (a paper-size LBRN-S takes
20-50 s), whatever the target. Exporting one model.pt for x86, then rpi4, then jetson, or again
with --int8 or another kernel choice, traces the same graph each time. This cache keeps each
finished model.onnx under $LBDEPLOY_CACHE/traces (lbdeploy/cache.py), named by a key of everything
the trace depends on:

* the network: every submodule's class and settings (plain values, dataclasses, tensors) and every
  parameter and buffer, bytes included;
* the call: example input shape and dtype, input and output names, custom or standard ops, opset,
  dynamic batch;
* the tools: lbdeploy's own sources (every .py of the package), torch, onnx, onnxscript, Python.

A network with a setting the key cannot describe (any other object) is traced every time. A cached
graph is checked again as a fresh one is (`check_onnx`) before use, and every export's gate then
compares it with PyTorch. Entries are written whole (a temporary file renamed into place), so two
exports may fill one at the same time; the least recently used ones are removed beyond MAX_BYTES.
LBDEPLOY_TRACE_CACHE=off turns the cache off; any other value is the folder to use instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import platform
import shutil
from pathlib import Path

from lbdeploy.cache import cache_folder
from lbdeploy.files import replace_file

MAX_BYTES = 2 * 1024 ** 3  # entries beyond this total go, least recently used first
FORMAT = "1"  # bump when what an entry holds changes
SETTING = "LBDEPLOY_TRACE_CACHE"


class Uncacheable(Exception):
    """The network holds a setting the key cannot describe."""


def trace_folder() -> Path | None:
    """The folder of cached traces, or None when LBDEPLOY_TRACE_CACHE=off."""
    setting = os.environ.get(SETTING, "")
    if setting.lower() == "off":
        return None
    return Path(setting) if setting else cache_folder("traces")


def trace_key(module, example, call: dict) -> str | None:
    """The cache key of tracing `module` on `example` with the exporter settings `call`; None when
    the cache is off or the module holds a setting the key cannot describe."""
    if trace_folder() is None:
        return None
    digest = hashlib.sha256()
    for part in (FORMAT, *_tool_versions(), _package_digest(), _canonical(call),
                 _canonical((tuple(example.shape), str(example.dtype)))):
        digest.update(part.encode() + b"\0")
    try:
        for name, sub in module.named_modules():
            settings = {key: value for key, value in vars(sub).items() if not key.startswith("_")}
            digest.update(f"{name}:{type(sub).__module__}.{type(sub).__qualname__}:{_canonical(settings)}\0".encode())
        for name, tensor in (*module.named_parameters(), *module.named_buffers()):
            digest.update(f"{name}:{_canonical(tensor)}\0".encode())
    except Uncacheable:
        return None
    return digest.hexdigest()[:32]


def restore(key: str, path: Path, check) -> bool:
    """Copy the entry `key` to `path` if there is one that `check(onnx.ModelProto)` accepts; an
    entry it refuses is removed. Returns whether `path` now holds the cached graph."""
    import onnx

    folder = trace_folder()
    if folder is None:
        return False
    entry = folder / f"{key}.onnx"
    try:
        shutil.copyfile(entry, path)
    except OSError:  # no such entry, or a cache folder that cannot be read
        return False
    try:
        check(onnx.load(str(path)))
    except Exception:  # a damaged or foreign entry: trace again
        with contextlib.suppress(OSError):
            entry.unlink()
        Path(path).unlink(missing_ok=True)
        return False
    with contextlib.suppress(OSError):
        os.utime(entry)  # recently used
    return True


def store(key: str, path: Path) -> None:
    """Keep the finished graph at `path` as entry `key` (a cache that cannot be written is skipped)."""
    folder = trace_folder()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        replace_file(folder / f"{key}.onnx", lambda temporary: shutil.copyfile(path, temporary))
    except OSError:
        return
    _prune(folder)


def _prune(folder: Path) -> None:
    """Remove the least recently used entries while the folder holds more than MAX_BYTES."""
    entries = []
    for entry in folder.glob("*.onnx"):
        try:
            stat = entry.stat()
        except FileNotFoundError:  # another export pruned it
            continue
        entries.append((stat.st_mtime, stat.st_size, entry))
    total = sum(size for _, size, _ in entries)
    for _, size, entry in sorted(entries, key=lambda row: row[0]):
        if total <= MAX_BYTES:
            break
        with contextlib.suppress(OSError):
            entry.unlink()
        total -= size


def _canonical(value) -> str:
    """A text of `value` that equal values share across processes; Uncacheable for other objects."""
    import numpy as np
    import torch

    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}[{','.join(map(_canonical, value))}]"
    if isinstance(value, dict):
        items = sorted((_canonical(k), _canonical(v)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return f"{type(value).__qualname__}{_canonical(dataclasses.asdict(value))}"
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous().reshape(-1)
        raw = data.view(torch.uint8).numpy().tobytes() if data.numel() else b""
        return f"tensor({value.dtype},{tuple(value.shape)},{hashlib.sha256(raw).hexdigest()})"
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return f"ndarray({data.dtype},{data.shape},{hashlib.sha256(data.tobytes()).hexdigest()})"
    raise Uncacheable(type(value).__qualname__)


def _tool_versions() -> tuple[str, ...]:
    import onnx
    import onnxscript
    import torch

    return torch.__version__, onnx.__version__, onnxscript.__version__, platform.python_version()


@functools.lru_cache(maxsize=1)
def _package_digest() -> str:
    """sha256 of lbdeploy's Python sources (its subpackages are symlinks in a checkout)."""
    import lbdeploy

    root = Path(lbdeploy.__file__).parent
    digest = hashlib.sha256()
    files = []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        files.extend(Path(folder) / name for name in names if name.endswith(".py"))
    for file in sorted(files):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()
