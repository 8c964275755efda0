"""The TensorRT backend's record and export step: plugin sources and a build script; the engine is
built on the Jetson (the runtime class is lbdeploy.runtime.backends.tensorrt.TensorRTBackend)."""

from __future__ import annotations

from pathlib import Path

from lbdeploy.backends import BackendSpec
from lbdeploy.exporters.backends.base import ExportStep, Progress
from lbdeploy.runtime.backends.tensorrt import TensorRTBackend


class TensorRTExport(ExportStep):
    """Adds tensorrt/ (exporters/tensorrt.py); parity runs model.onnx in ONNX Runtime here."""

    def check(self) -> None:
        """Refuse a board whose stock TensorRT cannot run this export (ExportError with working advice)."""
        from lbdeploy.exporters.tensorrt import check_tensorrt_target

        check_tensorrt_target(self.target, custom_ops=self.custom_ops)

    def add_files(self, work: Path, progress: Progress) -> dict:
        """Write the plugin sources, build script and TensorRT's ONNX file."""
        from lbdeploy.exporters.tensorrt import add_tensorrt_files

        return add_tensorrt_files(work, self.target, custom_ops=self.custom_ops)

    def next_steps(self, manifest: dict) -> str:
        """What to run on the board: build the plugin, build the engine, infer."""
        from lbdeploy.exporters.tensorrt import next_steps_text

        return next_steps_text(manifest)


BACKEND = BackendSpec("tensorrt", "a TensorRT engine with our TernaryConv plugin, built on the Jetson", "tensorrt",
                      TensorRTBackend, TensorRTExport, section="tensorrt",
                      section_schema={"onnx": (str,), "engine": (str,), "board": (str,), "cuda_arch": (int,),
                                      "plugin": (dict, type(None))},
                      loadable=("onnx",), built_on_device=("engine", "plugin.library"),
                      imports=("tensorrt", "cuda"), rank=3)
