"""The TVM backend's record and export step: the model compiled for the target into tvm/model.so
(exporters/tvm/; the runtime class is lbdeploy.runtime.backends.tvm.TVMBackend)."""

from __future__ import annotations

from pathlib import Path

from lbdeploy.artifact import MODEL_FILE
from lbdeploy.backends import BackendSpec
from lbdeploy.exporters.backends.base import ExportStep, Progress
from lbdeploy.runtime.backends.tvm import TVMBackend


class TVMExport(ExportStep):
    """Adds tvm/model.so; the parity gate runs that module itself when it runs on this machine's CPU."""

    def add_files(self, work: Path, progress: Progress) -> dict:
        """Compile model.onnx with TVM for the target."""
        from lbdeploy.exporters.tvm.compile import compile_artifact

        progress(f"compiling with TVM for {self.target.name}")
        return compile_artifact(work / MODEL_FILE, self.target, work)

    def parity_runner(self, work: Path, manifest: dict):
        """The compiled module run by the TVM runtime, when it runs on this machine's CPU."""
        from lbdeploy.kernels.elf import host_arch

        section = manifest["tvm"]
        if section["arch"] != host_arch() or section["gpu"]:
            return None
        backend = TVMBackend(work, manifest)
        return (lambda images: backend.run({backend.input_names[0]: images})), "tvm"


BACKEND = BackendSpec("tvm", "a TVM module compiled for the target (CPU or NVIDIA GPU)", "tvm", TVMBackend, TVMExport,
                      precisions=("int8",), exports_here=True, section="tvm",
                      section_schema={"module": (str,), "arch": (str,), "device": (str,), "gpu": (bool,),
                                      "batch": (int,)},
                      loadable=("module",), imports=("tvm",), rank=2)
