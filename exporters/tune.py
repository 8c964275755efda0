"""`lbdeploy tune ARTIFACT`: re-measure each ternary layer's kernel on this machine and rewrite the choice.

On the board that runs it, an ONNX Runtime artifact is copied into a temporary sibling folder, its
model.onnx re-chosen layer by layer (exporters.kernel_choice, measured here with the threads
asked for), its outputs re-checked against the reference inputs and outputs it keeps
(exporters.reference, the export's gate rule), its manifest rewritten with every file's new sha256,
and the folder swapped in atomically (exporters.atomic): interrupted or failed, the artifact is left
as it was. Needs onnx and onnxruntime, not torch.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from lbdeploy.artifact import MODEL_FILE, contained_path, list_files, open_artifact, write_manifest
from lbdeploy.errors import ArtifactError, ConfigError, ExportError
from lbdeploy.exporters.atomic import atomic_folder
from lbdeploy.exporters.export import graph_custom_ops
from lbdeploy.exporters.kernel_choice import choose_forms, layer_choices, measurable_here
from lbdeploy.exporters.reference import check_reference
from lbdeploy.targets import get_target


def _check_tunable(manifest: dict):
    target = get_target(manifest.get("target", "onnx"))
    if manifest["backend"] != "ort":
        raise ConfigError(f"lbdeploy tune measures ONNX Runtime artifacts; a {manifest['backend']!r} artifact takes "
                          "its kernel choice at export (lbdeploy export --kernels ternary|dense)")
    if not measurable_here(target, "ort"):
        raise ConfigError(f"this artifact was exported for {target.name} ({target.arch}); run lbdeploy tune on that "
                          "machine")
    if not layer_choices(manifest):
        raise ConfigError("this artifact records no per-layer kernel choice (no ternary layers, or exported before "
                          "the choice existed); re-export it with this lbdeploy")
    if manifest["kernels"].get("ops") == "standard":
        raise ConfigError("this artifact was exported with --ops standard: every layer runs the standard conv and "
                          "our op may not be used; re-export without --ops standard to tune it")
    if not manifest.get("kernel_library"):
        raise ConfigError("this artifact carries no kernel library to measure our op with; re-export it with "
                          "--backend ort")
    return target


def tune_artifact(artifact_dir, threads: int | None = None,
                  progress: Callable[[str], None] = lambda message: None) -> dict:
    """Re-measure and rewrite the per-layer kernel choice of `artifact_dir` in place (atomically).

    Args:
        artifact_dir: an ONNX Runtime artifact folder exported for this machine's architecture.
        threads: intra-op threads to measure with (None: those recorded at export).
    Returns:
        The new manifest (its `kernels` section holds the new choice and the re-check report).
    Raises:
        ConfigError: an artifact this machine cannot tune; ArtifactError: a damaged artifact;
        ExportError: the re-chosen model fails the re-check (the artifact is left unchanged).
    """
    from lbdeploy.runtime.backends.ort import OrtBackend

    root, manifest = open_artifact(artifact_dir)
    target = _check_tunable(manifest)
    threads = threads if threads is not None else manifest["kernels"].get("threads")
    library = contained_path(root, manifest["kernel_library"]["path"], "kernel library")
    known = [row["name"] for row in layer_choices(manifest)]
    with atomic_folder(Path(artifact_dir), force=True) as work:
        for relative in manifest["files"]:  # the signature is not copied: it would no longer match (re-sign)
            (work / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(contained_path(root, relative, "artifact file"), work / relative)
        shape = [1, *manifest["input"]["shape"][1:]]
        choice = choose_forms(work / MODEL_FILE, manifest.get("precision", "fp32"), "auto", "custom", target, "ort",
                              threads=threads, input_shape=shape, library=library, known=known, progress=progress)
        custom_ops = graph_custom_ops(work / MODEL_FILE)
        updated = {**manifest, "custom_ops": custom_ops, "ops": "custom" if custom_ops else "standard",
                   "kernels": {**choice, "ops": "custom", "tuned": True}}
        if "quantization" in updated:
            updated["quantization"] = {**updated["quantization"],
                                       "ternary_convs": sum(row["choice"] == "ternary" for row in choice["layers"])}
        updated["files"] = list_files(work)  # model.onnx changed: the re-check loads what is there now
        progress("re-checking the outputs against the artifact's reference")
        backend = OrtBackend(work, updated, threads=threads)
        report = check_reference(work, updated, lambda images: backend.run({backend.input_names[0]: images}),
                                 "ort (tuned)")
        if not report.passed:
            raise ExportError("the re-chosen model fails the artifact's reference check; the artifact was left "
                              "unchanged:\n" + report.summary())
        updated["kernels"]["recheck"] = report.to_dict()
        updated.pop("files", None)
        written = write_manifest(work, {key: value for key, value in updated.items()
                                        if key not in ("format", "format_version")})
    _verify_rewritten(Path(artifact_dir), threads)
    return written


def _verify_rewritten(artifact_dir: Path, threads: int | None) -> None:
    """`lbdeploy verify` on the swapped-in artifact: hashes, containment and the reference outputs.

    Raises:
        ArtifactError: a check failed (the tuned artifact is in place; `lbdeploy verify` says why).
    """
    from lbdeploy.exporters.verify import verify_artifact

    report = verify_artifact(artifact_dir, backend="ort", threads=threads)
    if not report.ok:
        raise ArtifactError(f"the tuned artifact {artifact_dir} fails verification: "
                            + "; ".join(line for line in report.lines() if line.startswith("FAIL")))
