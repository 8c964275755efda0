"""The TVM export step: the model compiled for the target into tvm/model.so (exporters/tvm/)."""

from __future__ import annotations

from pathlib import Path

from lbdeploy.exporters.backends.base import ExportStep, Progress
from lbdeploy.artifact import MODEL_FILE


class TVMExport(ExportStep):
    """Adds tvm/model.so; the parity gate runs that module itself when it runs on this machine's CPU."""

    def add_files(self, work: Path, progress: Progress) -> dict:
        """Compile model.onnx with TVM for the target."""
        from lbdeploy.exporters.tvm.compile import compile_artifact

        progress(f"compiling with TVM for {self.target.name}")
        return compile_artifact(work / MODEL_FILE, self.target.name, work)

    def parity_runner(self, work: Path, manifest: dict):
        """The compiled module run by the TVM runtime, when it runs on this machine's CPU."""
        from lbdeploy.kernels.elf import host_arch

        section = manifest["tvm"]
        if section["arch"] != host_arch() or section["gpu"]:
            return None
        from lbdeploy.runtime.backends.tvm import TVMBackend

        backend = TVMBackend(work, manifest)
        return (lambda images: backend.run({backend.input_names[0]: images})), "tvm"
