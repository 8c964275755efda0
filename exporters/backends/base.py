"""The defaults every export step shares (see exporters/backends/__init__.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from lbdeploy.targets import Target

Progress = Callable[[str], None]


class ExportStep:
    """An export step that adds nothing: the artifact is model.onnx alone.

    Args:
        target: the target record (lbdeploy.targets). settings: this backend's settings on it.
        custom_ops: whether model.onnx may use ai.lbdeploy ops (`--ops custom`): the step then adds
            what runs them (the kernel library, the plugin), even if the kernel choice left none in
            the graph, so `lbdeploy tune` can bring them back; False: plain ONNX ops only.
    """

    def __init__(self, target: Target, settings, custom_ops: bool):
        self.target = target
        self.settings = settings
        self.custom_ops = custom_ops

    def check(self) -> None:
        """Refuse, before any export work, a target this backend cannot serve (raises ExportError)."""

    def add_files(self, work: Path, progress: Progress) -> dict:
        """Write the backend's files into the artifact folder being built; returns a manifest fragment."""
        return {}

    def parity_runner(self, work: Path, manifest: dict):
        """(run(images) -> outputs, label) to check this backend's files here, or None to check
        model.onnx with ONNX Runtime on this machine."""
        return None

    def next_steps(self, manifest: dict) -> str | None:
        """Instructions for the device, printed once the artifact passed its checks (None: nothing to do)."""
        return None
