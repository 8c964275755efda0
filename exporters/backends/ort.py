"""The ONNX Runtime backend's record and export step: our TernaryConv kernel library for the
target's CPU, in kernels/ (the runtime class is lbdeploy.runtime.backends.ort.OrtBackend)."""

from __future__ import annotations

import shutil
from pathlib import Path

from lbdeploy.backends import BackendSpec
from lbdeploy.exporters.backends.base import ExportStep, Progress
from lbdeploy.runtime.backends.ort import OrtBackend

KERNEL_FILE = "kernels/libternary_ort.so"


class OrtExport(ExportStep):
    """Adds kernels/libternary_ort.so, built (or cross-built) for the target's architecture."""

    def add_files(self, work: Path, progress: Progress) -> dict:
        """Build the kernel library for the target's CPU and copy it into the artifact."""
        if not self.custom_ops:
            return {}
        from lbdeploy.kernels.build import build_ort_library
        from lbdeploy.kernels.elf import host_arch

        arch = self.target.arch or host_arch()
        library = build_ort_library(arch=None if arch == host_arch() else arch, progress=progress)
        (work / KERNEL_FILE).parent.mkdir(exist_ok=True)
        shutil.copy2(library, work / KERNEL_FILE)
        return {"kernel_library": {"path": KERNEL_FILE, "arch": arch}}


BACKEND = BackendSpec("ort", "ONNX Runtime with our TernaryConv kernel library", "ort", OrtBackend, OrtExport,
                      precisions=("int8",), exports_here=True, imports=("onnxruntime",), rank=1)
