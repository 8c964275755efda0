"""ONNX Runtime backend: one InferenceSession on the artifact's model.onnx.

When the manifest lists custom ops, our kernel library (manifest["kernel_library"]["path"], inside
the artifact folder) is registered on the session first; it is refused up front if it is missing,
outside the folder or built for another CPU architecture. A graph with TernaryConv nodes but no kernel library gets our error instead of
ONNX Runtime's. torch is never imported here.

For an artifact (a manifest with `files`), ONNX Runtime loads private copies made from the
verified bytes (runtime/verified.py): model.onnx, every external-data file it names (each must
be listed, inside the folder and match its sha256; runtime/onnx_external.py finds them) and the
kernel library, so a file swapped after the check is never what runs. A manifest without `files`
(an exporter's own freshly written folder) is loaded in place.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from lbdeploy.artifact import MODEL_FILE, contained_path
from lbdeploy.errors import ArtifactError, BackendUnavailable, KernelLibraryError, TernaryWeightError
from lbdeploy.kernels.elf import require_host_arch
from lbdeploy.ops.ternary_conv import DOMAIN, OP_TYPE
from lbdeploy.runtime.onnx_external import external_data_locations
from lbdeploy.runtime.verified import copy_verified, private_folder

# ONNX Runtime's message when our kernel's constructor refuses packed weights holding the invalid code 3
_INVALID_CODE = "invalid 2-bit code 3"


def check_kernel_library(path: Path) -> None:
    """Refuse a kernel library that is missing or built for another architecture.

    Raises:
        KernelLibraryError: with what was expected and how to fix it.
    """
    if not path.is_file():
        raise KernelLibraryError(
            f"the artifact needs our kernel library {path}, which is missing; re-export with `lbdeploy export`"
        )
    require_host_arch(path, "kernel library")


def session_options(threads: int | None = None, library: Path | str | None = None):
    """ONNX Runtime session options as lbdeploy runs sessions.

    Idle worker threads stop spinning between runs (`session.force_spinning_stop`), so several
    sessions in one process do not steal each other's cores; `threads` intra-op threads (None:
    ONNX Runtime's default) and one inter-op thread; `library` (a custom-op library) registered.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.force_spinning_stop", "1")
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if library:
        options.register_custom_ops_library(str(library))
    return options


class OrtBackend:
    """ONNX Runtime CPU session on an artifact folder.

    Args:
        artifact_dir: the artifact folder (holding model.onnx).
        manifest: its manifest.
        threads: intra-op threads (None: ONNX Runtime's default, one per core).
        providers: execution providers (default CPUExecutionProvider).
        profile_prefix: turn on ONNX Runtime's profiler, writing its trace to files with this
            prefix (`session.end_profiling()` returns the path).
        custom_op_library: a kernel library of this machine to register instead of the artifact's
            (the exporter's parity gate on a cross-compiled artifact).
    """

    interleave_env: dict = {}  # the session options already stop idle workers from spinning

    def __init__(self, artifact_dir: Path, manifest: dict, threads: int | None = None, providers=None,
                 profile_prefix: str | None = None, custom_op_library: Path | str | None = None):
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackendUnavailable("onnxruntime is not installed; pip install 'lbdeploy[ort]'") from err
        self.artifact_dir, self.manifest, self.threads = Path(artifact_dir), manifest, threads
        model_path = contained_path(artifact_dir, MODEL_FILE, "model")
        if not model_path.is_file():
            raise ArtifactError(f"{artifact_dir} has no {MODEL_FILE}; it was not exported for ONNX Runtime")
        registered = bool(manifest.get("custom_ops"))
        library = manifest.get("kernel_library")
        if registered and custom_op_library is None and (not library or not library.get("path")):
            raise KernelLibraryError(
                "the manifest lists custom ops but no kernel_library; re-export with `lbdeploy export --backend ort`"
            )
        own_library = library["path"] if registered and custom_op_library is None else None
        with self._loadable(own_library) as (model, lib):
            if lib is not None:
                check_kernel_library(lib)
            options = session_options(threads, custom_op_library or lib)
            if profile_prefix:
                options.enable_profiling = True
                options.profile_file_prefix = profile_prefix
            shown = custom_op_library or (self.artifact_dir / own_library if own_library else None)
            self.session = self._session(ort, model, options, providers, registered, shown, model_path)
        self.input_names = [item.name for item in self.session.get_inputs()]
        self.output_names = [item.name for item in self.session.get_outputs()]

    @contextmanager
    def _loadable(self, library: str | None):
        """Yield (model path, kernel library path or None) to hand to ONNX Runtime.

        With `files` in the manifest: private copies of the verified bytes of model.onnx, its
        external-data files and the library; otherwise the files in place.
        """
        files = self.manifest.get("files")
        if files is None:
            yield (contained_path(self.artifact_dir, MODEL_FILE, "model"),
                   contained_path(self.artifact_dir, library, "kernel library") if library else None)
            return
        with private_folder() as folder:
            model = copy_verified(self.artifact_dir, MODEL_FILE, files, folder, "model")
            for location in external_data_locations(model.read_bytes()):
                copy_verified(self.artifact_dir, location, files, folder, "external data file of model.onnx")
            lib = copy_verified(self.artifact_dir, library, files, folder, "kernel library") if library else None
            yield model, lib

    def _session(self, ort, model: Path, options, providers, registered: bool, library_path, model_path: Path):
        """The InferenceSession, ONNX Runtime's errors turned into ours for the causes we know.

        `library_path` and `model_path` are the artifact's files, named in messages (not the private copies).
        """
        try:
            return ort.InferenceSession(str(model), sess_options=options,
                                        providers=providers or ["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own exception types; re-raise ours for known causes
            manifest = self.manifest
            if _INVALID_CODE in str(err):
                raise TernaryWeightError(f"{model_path} holds packed TernaryConv weights with the invalid 2-bit code "
                                         "3 (docs/ops/TernaryConv.md); re-export the model") from None
            missing = [op for op in manifest.get("custom_ops", []) if op.get("op_type") and op["op_type"] in str(err)]
            if registered and missing:
                raise KernelLibraryError(
                    f"the kernel library {library_path} does not provide {DOMAIN}::{missing[0]['op_type']} "
                    f"(version {missing[0].get('version')}), which {model_path} uses; re-export the artifact with "
                    "this lbdeploy so it carries a matching kernels/libternary_ort.so"
                ) from None
            if not registered and (DOMAIN in str(err) or OP_TYPE in str(err)):
                raise KernelLibraryError(
                    f"model {model_path} uses {DOMAIN}::{OP_TYPE} but no kernel library was registered; "
                    "export with `--backend ort` so the artifact carries kernels/libternary_ort.so"
                ) from err
            raise ArtifactError(f"ONNX Runtime cannot load {model_path}: {err}") from err

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the session; returns all outputs by name."""
        values = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, values))

    def op_breakdown(self, feeds: dict, runs: int, top: int):
        """ONNX Runtime's profiler on a second session of the artifact with the same threads
        (kernel time per node); the first run (allocations) is left out of the totals."""
        from lbdeploy.runtime.backends.breakdown import ort_trace_breakdown

        with tempfile.TemporaryDirectory(prefix="lbdeploy-ort-profile-") as tmp:
            profiled = OrtBackend(self.artifact_dir, self.manifest, threads=self.threads,
                                  providers=self.session.get_providers(), profile_prefix=str(Path(tmp) / "ort"))
            for _ in range(runs + 1):
                profiled.run(feeds)
            events = json.loads(Path(profiled.session.end_profiling()).read_text())
        return ort_trace_breakdown(events, runs, top)
