"""Reading an exported artifact folder (docs/artifact.md) safely.

`open_artifact(dir)` reads manifest.json, checks its format and version, and verifies the sha256
of every file the manifest lists, so a truncated or modified model or kernel library is refused
before any backend loads it. `summarize` is the public view of a manifest (served at /v1/model).

To accept a new manifest version, extend SUPPORTED_FORMAT_VERSIONS and the checks in
`_check_manifest`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lbdeploy.errors import ArtifactError

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "lbdeploy-artifact"
SUPPORTED_FORMAT_VERSIONS = (1,)
_REQUIRED_KEYS = ("arch", "task", "input", "outputs", "backend", "files")
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_manifest(manifest: dict, where: Path) -> None:
    if manifest.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{where} is not an lbdeploy artifact manifest (format {manifest.get('format')!r})")
    if manifest.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
        raise ArtifactError(
            f"{where} has format_version {manifest.get('format_version')!r}; this lbdeploy reads "
            f"{list(SUPPORTED_FORMAT_VERSIONS)}: upgrade lbdeploy or re-export the model"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ArtifactError(f"{where} lacks {missing}; re-export the model with `lbdeploy export`")
    if not any(out.get("final") for out in manifest["outputs"]):
        raise ArtifactError(f"{where} marks no output as final; re-export the model")


def verify_files(artifact_dir: Path, files: dict) -> None:
    """Check that every listed file exists inside the folder and matches its sha256.

    Raises:
        ArtifactError: a path outside the folder, a missing file or a checksum mismatch.
    """
    root = artifact_dir.resolve()
    for relative, expected in files.items():
        path = (root / relative).resolve()
        if root not in path.parents:
            raise ArtifactError(f"manifest lists {relative!r}, which is outside the artifact folder {root}")
        if not path.is_file():
            raise ArtifactError(f"artifact file {relative!r} is missing from {root}; re-export the model")
        actual = file_sha256(path)
        if actual != expected:
            raise ArtifactError(
                f"artifact file {relative!r} in {root} was modified (sha256 {actual[:12]}..., manifest says "
                f"{str(expected)[:12]}...); re-export the model or restore the file"
            )


def open_artifact(artifact_dir) -> tuple[Path, dict]:
    """Read and verify an artifact folder.

    Args:
        artifact_dir: the folder `lbdeploy export` wrote.

    Returns:
        (resolved folder, manifest dict).

    Raises:
        ArtifactError: no manifest, an unreadable or unknown manifest, or files that do not match it.
    """
    root = Path(artifact_dir)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ArtifactError(f"{root} has no {MANIFEST_NAME}; pass the folder written by `lbdeploy export`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{manifest_path} is not valid JSON ({err}); re-export the model") from err
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{manifest_path} must hold a JSON object; re-export the model")
    _check_manifest(manifest, manifest_path)
    verify_files(root, manifest["files"])
    return root.resolve(), manifest


def final_output(manifest: dict) -> dict:
    """The manifest entry of the output to decode (the last stack's heatmaps)."""
    return [out for out in manifest["outputs"] if out.get("final")][-1]


def summarize(manifest: dict) -> dict:
    """The public part of a manifest: what the model is and how it is fed, without file hashes."""
    keys = ("arch", "task", "input", "outputs", "pose", "target", "backend", "ops", "opset", "precision",
            "quantization", "tools")
    summary = {key: manifest[key] for key in keys if key in manifest}
    summary["config"] = manifest.get("config", {})
    return summary


def output_names(task: str, count: int) -> list[str]:
    """Model output names: heatmaps_0..heatmaps_{S-1} for pose (one per stack), logits for classification."""
    return [f"heatmaps_{i}" for i in range(count)] if task == "pose" else ["logits"]


def io_manifest(metadata: dict, config: dict, output_names: list[str], output_shapes: list) -> dict:
    """The task, input, outputs and pose sections of a manifest, from a checkpoint's metadata.

    Args:
        metadata: the checkpoint metadata (task, input_size, mean, std, heatmap_stride, joints,
            flip_pairs, skeleton); config: the build config (input_size when metadata lacks it).
        output_names: the model's outputs in order, last = final.
        output_shapes: the shape of each output for a batch of one.
    Returns:
        {"task", "input", "outputs"} and, for pose models, "pose".
    """
    height, width = (int(v) for v in metadata.get("input_size", config.get("input_size", (256, 256))))
    task = metadata.get("task", "pose")
    last = len(output_names) - 1
    section = {
        "task": task,
        "input": {"name": "image", "shape": ["N", 3, height, width], "layout": "NCHW", "dtype": "float32",
                  "color": "RGB", "pixel_scale": float(metadata.get("pixel_scale", 1.0 / 255.0)),
                  "mean": list(metadata.get("mean", (0.0, 0.0, 0.0))), "std": list(metadata.get("std", (1.0, 1.0, 1.0)))},
        "outputs": [{"name": name, "shape": ["N", *[int(d) for d in shape[1:]]], **({"stack": i} if task == "pose" else {}),
                     "final": i == last} for i, (name, shape) in enumerate(zip(output_names, output_shapes))],
    }
    if task == "pose":
        section["pose"] = {key: metadata[key] for key in ("joints", "flip_pairs", "skeleton") if key in metadata}
        section["pose"]["heatmap_stride"] = int(metadata.get("heatmap_stride", height // output_shapes[-1][2]))
    return section


def checkpoint_manifest(arch: str, config: dict, metadata: dict, output_shapes: list) -> dict:
    """The manifest equivalent of a model.pt, from its checkpoint metadata (no files, backend "torch").

    Args:
        arch: preset name; config: the build config; metadata: the checkpoint metadata.
        output_shapes: the shape of each output for a batch of one, last = final.
    Returns:
        A manifest dict with the sections the Predictor reads (input, outputs, pose).
    """
    names = output_names(metadata.get("task", "pose"), len(output_shapes))
    return {
        "format": FORMAT_NAME, "format_version": 1, "arch": arch, "config": config,
        **io_manifest(metadata, config, names, output_shapes),
        "target": "host", "backend": "torch", "ops": "standard", "custom_ops": [], "kernel_library": None, "files": {},
    }
