"""The artifact format (docs/artifact.md): one folder, one manifest.json, defined once here.

Every layer uses this module: the exporters write artifacts with `write_manifest`, the runtime
reads them with `open_artifact`, the trust boundary of an artifact:

- the manifest is schema-checked (`validate_manifest`): a field of the wrong type is refused with
  a one-line error naming the field;
- every listed file must lie inside the folder once symlinks are resolved and match its sha256,
  and a manifest that names a loadable file (`loadable_files`: model, kernel library, TVM module)
  without listing it in `files` is refused;
- backends resolve each file they load with `contained_path` (never outside the folder), and
  files added on the device later (a TensorRT engine) are checked with `verify_file` at load.

torch-free: a board imports this with the runtime alone.

To add a manifest field, add it to `_SCHEMA`; a backend's own section, its schema and the files
it loads are its record's (lbdeploy.backends); to accept a new manifest version, extend SUPPORTED_FORMAT_VERSIONS. A task's own
section (`pose`, `saliency`, `classification`) is its record's (lbdeploy.tasks): its schema check
and how it is written from checkpoint metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import NamedTuple

from lbdeploy.backends import backends
from lbdeploy.errors import ArtifactError
from lbdeploy.tasks import TASKS, get_task

FORMAT_NAME = "lbdeploy-artifact"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST_NAME = "manifest.json"
MODEL_FILE = "model.onnx"
# The signature of the whole folder (docs/signing.md). It covers manifest.json, so the manifest
# cannot list it; `list_files` leaves it out.
SIGNATURE_NAME = "signature.sig"
# Written into an export's temporary folder (its content: the folder's own name) so that only
# folders that are provably an interrupted export's are ever cleaned up; removed before the swap.
PARTIAL_MARKER = ".lbdeploy-partial"
_UNLISTED = frozenset({MANIFEST_NAME, SIGNATURE_NAME, PARTIAL_MARKER})
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Bounds checked before anything is allocated from a manifest's numbers (item: absurd shapes).
MAX_FILES = 10_000
MAX_PATH_CHARS = 1024
MAX_SIDE = 8192
MAX_PIXELS = 8192 * 8192
MAX_CHANNELS = 4096
MAX_BATCH = 4096

# field -> (accepted JSON types, required). Nested shapes are checked by `_check_nested`.
_SCHEMA = {
    "format": ((str,), True), "format_version": ((int,), True), "arch": ((str,), True),
    "task": ((str,), True), "input": ((dict,), True), "outputs": ((list,), True), "backend": ((str,), True),
    "files": ((dict,), True), "config": ((dict,), False), "target": ((str,), False), "ops": ((str,), False),
    "opset": ((int,), False), "custom_ops": ((list,), False), "kernel_library": ((dict, type(None)), False),
    "parity": ((dict,), False), "tools": ((dict,), False), "precision": ((str,), False),
    "quantization": ((dict,), False), "accuracy": ((dict,), False), "kernels": ((dict,), False),
    "reference": ((dict,), False),
}
_JSON_TYPE_NAMES = {str: "a string", int: "an integer", dict: "an object", list: "a list", type(None): "null",
                    bool: "true/false", float: "a number"}


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _type_error(field: str, expected: tuple, value) -> ArtifactError:
    names = " or ".join(_JSON_TYPE_NAMES.get(t, t.__name__) for t in expected)
    return ArtifactError(f"manifest field {field!r} must be {names}, not {type(value).__name__}; re-export the model")


def _require(value, expected: tuple, field: str):
    # bool is an int in Python but not in the schema
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        raise _type_error(field, expected, value)
    return value


def _bounded_int(value, field: str, low: int, high: int) -> int:
    _require(value, (int,), field)
    if not low <= value <= high:
        raise ArtifactError(f"manifest field {field!r} is {value}, outside {low}..{high}; re-export the model")
    return value


def _check_shape(shape: list, field: str) -> None:
    """A batch that is a name ("N") or a positive integer up to MAX_BATCH, then positive integers
    within MAX_CHANNELS / MAX_SIDE, at most MAX_PIXELS per map."""
    if not 2 <= len(shape) <= 4:
        raise ArtifactError(f"manifest field {field!r} must have 2 to 4 entries, not {len(shape)}")
    if not (isinstance(shape[0], str) and 0 < len(shape[0]) <= 32):
        _bounded_int(shape[0], f"{field}[0]", 1, MAX_BATCH)
    dims = [_bounded_int(d, f"{field}[{i + 1}]", 1, MAX_CHANNELS if i == 0 else MAX_SIDE)
            for i, d in enumerate(shape[1:])]
    if len(dims) == 3 and dims[1] * dims[2] > MAX_PIXELS:
        raise ArtifactError(f"manifest field {field!r} has {dims[1]}x{dims[2]} maps, above {MAX_PIXELS} pixels")


def _check_numbers(values, field: str, count: int, positive: bool = False) -> None:
    _require(values, (list,), field)
    if len(values) != count:
        raise ArtifactError(f"manifest field {field!r} must have {count} entries (one per input channel), "
                            f"not {len(values)}")
    for index, value in enumerate(values):
        _require(value, (int, float), f"{field}[{index}]")
        if value != value or value in (float("inf"), float("-inf")) or (positive and value <= 0):
            raise ArtifactError(f"manifest field '{field}[{index}]' is {value}; it must be a finite "
                                f"{'positive ' if positive else ''}number")


def _check_file_key(relative) -> None:
    """A `files` key is a printable, encodable relative path of bounded length."""
    if (not relative or len(relative) > MAX_PATH_CHARS
            or any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in relative)):
        raise ArtifactError(f"manifest field 'files' has the key {ascii(relative)[:80]}, which is not a file path "
                            "of an artifact (empty, too long, or with control or unpaired surrogate characters)")


def _check_nested(manifest: dict) -> None:
    spec = manifest["input"]
    _require(spec.get("name"), (str,), "input.name")
    shape = _require(spec.get("shape"), (list,), "input.shape")
    if len(shape) != 4:
        raise ArtifactError(f"manifest field 'input.shape' must have 4 entries (N, C, H, W), not {len(shape)}")
    _check_shape(shape, "input.shape")
    for key in ("mean", "std"):
        if key in spec:
            _check_numbers(spec[key], f"input.{key}", shape[1], positive=key == "std")
    if "pixel_scale" in spec:
        _check_numbers([spec["pixel_scale"]], "input.pixel_scale", 1, positive=True)
    if not manifest["outputs"]:
        raise ArtifactError("manifest field 'outputs' is empty; re-export the model")
    for index, output in enumerate(manifest["outputs"]):
        _require(output, (dict,), f"outputs[{index}]")
        _require(output.get("name"), (str,), f"outputs[{index}].name")
        _check_shape(_require(output.get("shape"), (list,), f"outputs[{index}].shape"), f"outputs[{index}].shape")
        _require(output.get("final", False), (bool,), f"outputs[{index}].final")
    if len(manifest["files"]) > MAX_FILES:
        raise ArtifactError(f"manifest field 'files' lists {len(manifest['files'])} files, above {MAX_FILES}")
    for relative, digest in manifest["files"].items():
        _check_file_key(relative)
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ArtifactError(f"manifest field 'files[{relative!r}]' must be a sha256 hex digest; re-export the model")
    library = manifest.get("kernel_library")
    if library is not None:
        _require(library.get("path"), (str,), "kernel_library.path")
    for index, op in enumerate(manifest.get("custom_ops", [])):
        _require(op, (dict,), f"custom_ops[{index}]")
    if manifest["task"] not in TASKS:
        raise ArtifactError(f"the manifest's task {manifest['task']!r} is not one this lbdeploy runs "
                            f"({', '.join(TASKS)}); upgrade lbdeploy")
    for task in TASKS.values():
        task.check_section(manifest, _require)
    for spec in backends().values():
        if spec.section and spec.section in manifest:
            section = _require(manifest[spec.section], (dict,), spec.section)
            for key, types in spec.section_schema.items():
                if key in section:
                    _require(section[key], types, f"{spec.section}.{key}")
    for index, layer in enumerate(_require(manifest.get("kernels", {}).get("layers", []), (list,), "kernels.layers")):
        _require(layer, (dict,), f"kernels.layers[{index}]")
        _require(layer.get("name"), (str,), f"kernels.layers[{index}].name")
        if layer.get("choice") not in ("ternary", "dense"):
            raise ArtifactError(f"manifest field 'kernels.layers[{index}].choice' must be \"ternary\" or \"dense\"; "
                                "re-export the model")
    reference = manifest.get("reference")
    if reference is not None:
        _require(reference.get("inputs"), (str,), "reference.inputs")
        for key, relative in _require(reference.get("arrays"), (dict,), "reference.arrays").items():
            _require(relative, (str,), f"reference.arrays.{key}")


def validate_manifest(manifest, where) -> dict:
    """Check a parsed manifest against the schema of this lbdeploy.

    Args:
        manifest: the parsed JSON. where: its path, for messages.
    Returns:
        The manifest, unchanged.
    Raises:
        ArtifactError: not an lbdeploy manifest, an unsupported version, a missing field or a
            field of the wrong type (the message names it).
    """
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{where} must hold a JSON object; re-export the model")
    if manifest.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{where} is not an lbdeploy artifact manifest (format {manifest.get('format')!r})")
    if manifest.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
        raise ArtifactError(
            f"{where} has format_version {manifest.get('format_version')!r}; this lbdeploy reads "
            f"{list(SUPPORTED_FORMAT_VERSIONS)}: upgrade lbdeploy or re-export the model"
        )
    missing = [key for key, (_, required) in _SCHEMA.items() if required and key not in manifest]
    if missing:
        raise ArtifactError(f"{where} lacks {missing}; re-export the model with `lbdeploy export`")
    for key, (types, _) in _SCHEMA.items():
        if key in manifest:
            _require(manifest[key], types, key)
    _check_nested(manifest)
    if not any(out.get("final") for out in manifest["outputs"]):
        raise ArtifactError(f"{where} marks no output as final; re-export the model")
    return manifest


def loadable_files(manifest: dict) -> list[str]:
    """The artifact-relative paths that some backend may load as code or model.

    model.onnx, the kernel library, the reference arrays (exporters.reference) and the files each
    backend's record names in its manifest section (`BackendSpec.loadable`: a TVM module,
    TensorRT's ONNX file). These must be listed in `files` (and so hash-checked) whenever the
    manifest names them, with one exception: files a backend builds on the board
    (`device_built_files`: TensorRT's engine and plugin library) are named before they are built;
    they must then lie inside the folder, and are loaded only once `lbdeploy build-engine` has
    listed them.
    """
    paths = [MODEL_FILE]
    if manifest.get("kernel_library"):
        paths.append(manifest["kernel_library"]["path"])
    reference = manifest.get("reference")
    if isinstance(reference, dict):
        paths += [reference[key] for key in ("inputs", "outputs") if reference.get(key)]
    for spec in backends().values():
        paths += spec.loadable_files(manifest)
    return paths + device_built_files(manifest)


def device_built_files(manifest: dict) -> list:
    """The loadable files a backend builds on the board, when its section names them
    (`BackendSpec.built_on_device`: TensorRT's engine and plugin library)."""
    return [path for spec in backends().values() for path in spec.device_built_files(manifest)]


class Artifact(NamedTuple):
    """An opened, checked artifact folder: its resolved root and its manifest (unpacks as a pair).

    Attributes:
        root: the folder, symlinks resolved.
        manifest: the validated manifest dict (docs/artifact.md).
    """

    root: Path
    manifest: dict


def contained_path(root, relative, what: str = "file") -> Path:
    """`root / relative` with symlinks resolved, refused when it lies outside `root`.

    Backends resolve every file they load through this (open_artifact has hash-checked it).

    Raises:
        ArtifactError: a non-string, absolute or `..` path, or a symlink leading out of the folder.
    """
    root = Path(root).resolve()
    if not isinstance(relative, str) or not relative:
        raise ArtifactError(f"the manifest names the {what} as {relative!r}, which is not a file path in the artifact")
    path = (root / relative).resolve()
    if root not in path.parents:
        raise ArtifactError(f"the {what} {relative!r} lies outside the artifact folder {root}; refusing to load it")
    return path


def list_files(folder) -> dict:
    """Every file under `folder` but the manifest, the signature and an export's marker, as {relative path: sha256}."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): file_sha256(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.relative_to(folder).as_posix() not in _UNLISTED}


def stray_entries(folder) -> list[str] | None:
    """What in `folder` an lbdeploy artifact does not account for, or None when it is no artifact at all.

    An artifact is a folder whose manifest.json passes `validate_manifest` and whose every entry is
    the manifest, the signature, a file listed in `files` or a folder on the way to one. A symlink,
    an unlisted file or an empty folder is a stray: `export --force` refuses to delete such a folder.
    """
    folder = Path(folder)
    try:
        listed = set(validate_manifest(json.loads((folder / MANIFEST_NAME).read_text()), folder / MANIFEST_NAME)["files"])
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, ArtifactError):
        return None
    parents = {parent.as_posix() for relative in listed for parent in Path(relative).parents}
    strays = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            strays.append(relative)
        elif path.is_dir() and relative not in parents:
            strays.append(relative + "/")
        elif path.is_file() and relative not in listed and relative not in (MANIFEST_NAME, SIGNATURE_NAME):
            strays.append(relative)
    return strays


def listed_file(root: Path, relative: str, files: dict, what: str = "file") -> Path:
    """One artifact file that may be loaded: listed in `files`, inside `root` (symlinks resolved), present.

    Returns:
        The resolved path (its bytes still to be checked against `files`). Raises: ArtifactError.
    """
    if not isinstance(relative, str) or relative not in files:
        raise ArtifactError(f"the {what} {relative!r} is not listed in the manifest's 'files', so it cannot be "
                            "verified; refusing to load it (re-export the model)")
    path = contained_path(root, relative, what)
    if not path.is_file():
        raise ArtifactError(f"artifact {what} {relative!r} is missing from {root}; re-export the model")
    return path


def verify_file(root: Path, relative: str, files: dict, what: str = "file") -> Path:
    """Check one artifact file: `listed_file`, and its sha256 as listed.

    Returns:
        The resolved path. Raises: ArtifactError, naming the file and the fix.
    """
    path = listed_file(root, relative, files, what)
    actual = file_sha256(path)
    if actual != files[relative]:
        raise ArtifactError(
            f"artifact {what} {relative!r} in {root} was modified (sha256 {actual[:12]}..., manifest says "
            f"{str(files[relative])[:12]}...); re-export the model or restore the file"
        )
    return path


def verify_files(artifact_dir: Path, manifest: dict) -> None:
    """Check every listed file and that every loadable file is listed.

    Raises:
        ArtifactError: a path outside the folder, a missing or modified file, or a loadable file
            the manifest names without listing it.
    """
    files = manifest["files"]
    for relative in files:
        verify_file(artifact_dir, relative, files)
    built_later = device_built_files(manifest)
    for relative in loadable_files(manifest):
        if relative in built_later:
            contained_path(artifact_dir, relative, "file built on the device")
        elif relative not in files:
            raise ArtifactError(f"the manifest names {relative!r} without listing it in 'files'; refusing an "
                                "artifact whose model or kernels cannot be verified (re-export the model)")


def open_artifact(artifact_dir, trusted_key=None) -> Artifact:
    """Read, validate and verify an artifact folder.

    With a trusted public key (`trusted_key`, else $LBDEPLOY_TRUSTED_KEY; lbdeploy/signing.py) the
    folder's signature is checked first, before the manifest is read.

    Args:
        artifact_dir: the folder `lbdeploy export` wrote.
        trusted_key: a PEM public key file, or None for the environment's.
    Returns:
        The Artifact (resolved folder and manifest).
    Raises:
        ArtifactError: no manifest, an unreadable or malformed manifest, files that do not match
            it, or (with a trusted key) a missing or wrong signature.
    """
    from lbdeploy.signing import trusted_key as configured_key, verify_signature

    root = Path(artifact_dir)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ArtifactError(f"{root} has no {MANIFEST_NAME}; pass the folder written by `lbdeploy export`")
    key = configured_key(trusted_key)
    if key is not None:
        verify_signature(root, key)
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ArtifactError(f"{manifest_path} is not valid JSON ({type(err).__name__}); re-export the model") from None
    validate_manifest(manifest, manifest_path)
    verify_files(root, manifest)
    return Artifact(root.resolve(), manifest)


def is_artifact_folder(folder) -> bool:
    """True when `folder` holds a manifest.json that says it is an lbdeploy artifact (any version)."""
    try:
        return json.loads((Path(folder) / MANIFEST_NAME).read_text()).get("format") == FORMAT_NAME
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, RecursionError):
        return False


def write_manifest(folder: Path, manifest: dict) -> dict:
    """List every file of `folder` with its sha256 in `manifest["files"]` and write manifest.json.

    Returns:
        The manifest as written (validated).
    """
    folder = Path(folder)
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **manifest}
    manifest["files"] = list_files(folder)
    validate_manifest(manifest, folder / MANIFEST_NAME)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def record_files(folder, relatives: list[str]) -> dict:
    """Add files made on the device (a TensorRT engine, its plugin) to the manifest's `files`.

    The manifest is rewritten atomically (a temporary file renamed over it), so an interrupted
    call leaves the previous manifest.

    Returns:
        The updated manifest. Raises: ArtifactError for a path outside the folder or a missing file.
    """
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    for relative in relatives:
        path = contained_path(folder, relative)
        if not path.is_file():
            raise ArtifactError(f"{relative!r} is missing from {folder}; cannot record it in the manifest")
        manifest["files"][relative] = file_sha256(path)
    temporary = folder / f".{MANIFEST_NAME}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(temporary, folder / MANIFEST_NAME)
    return manifest


def final_output(manifest: dict) -> dict:
    """The manifest entry of the output to decode (the last stack's heatmaps)."""
    return [out for out in manifest["outputs"] if out.get("final")][-1]


def summarize(manifest: dict) -> dict:
    """The public part of a manifest: what the model is and how it is fed, without file hashes."""
    keys = ("arch", "task", "input", "outputs", *(task.section for task in TASKS.values() if task.section), "target",
            "backend", "ops", "opset", "precision", "quantization", "tools")
    summary = {key: manifest[key] for key in keys if key in manifest}
    summary["config"] = manifest.get("config", {})
    return summary


def io_manifest(metadata: dict, config: dict, output_count: int, output_shapes: list | None = None) -> dict:
    """The task, input, outputs and task section of a manifest, from a checkpoint's metadata.

    Args:
        metadata: the checkpoint metadata (task, input_size, pixel_scale, mean, std and what the
            task's record reads: joints, heatmap_stride, output_activation, classes, ...);
            config: the build config (input_size when metadata lacks it).
        output_count: how many outputs the model has (the last is final).
        output_shapes: each output's shape for a batch of one, when measured (None: the task's
            record derives them from the metadata).
    Returns:
        {"task", "input", "outputs"} and the task's section (lbdeploy.tasks) when it has one.
    """
    height, width = (int(v) for v in metadata.get("input_size", config.get("input_size", (256, 256))))
    task = get_task(metadata.get("task"))
    names = task.output_names(output_count)
    shapes = output_shapes or task.output_shapes(metadata, (height, width), len(names))
    section = {
        "task": task.name,
        "input": {"name": "image", "shape": ["N", 3, height, width], "layout": "NCHW", "dtype": "float32",
                  "color": "RGB", "pixel_scale": float(metadata.get("pixel_scale", 1.0 / 255.0)),
                  "mean": list(metadata.get("mean", (0.0, 0.0, 0.0))), "std": list(metadata.get("std", (1.0, 1.0, 1.0)))},
        "outputs": [{"name": name, "shape": ["N", *[int(d) for d in shape[1:]]], **task.output_fields(i),
                     "final": i == len(names) - 1} for i, (name, shape) in enumerate(zip(names, shapes))],
    }
    task_section = task.manifest_section(metadata, (height, width), shapes)
    if task_section is not None:
        section[task.section] = task_section
    return section


def checkpoint_manifest(arch: str, config: dict, metadata: dict, output_shapes: list) -> dict:
    """The manifest equivalent of a model.pt, from its checkpoint metadata (no files, backend "torch").

    Args:
        arch: preset name; config: the build config; metadata: the checkpoint metadata.
        output_shapes: the shape of each output for a batch of one, last = final.
    Returns:
        A manifest dict with the sections the predictors read (input, outputs, the task's).
    """
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "arch": arch, "config": config,
        **io_manifest(metadata, config, len(output_shapes), output_shapes),
        "target": "host", "backend": "torch", "ops": "standard", "custom_ops": [], "kernel_library": None, "files": {},
    }
