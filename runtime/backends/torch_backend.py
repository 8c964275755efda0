"""PyTorch backend: runs a model.pt checkpoint directly (the reference for every exported backend).

This is the only runtime module that imports torch. It rebuilds the network with
`lbdeploy.checkpoint.load_model` and derives the manifest equivalent from the checkpoint metadata
(output shapes from one dry run), so a Predictor can treat a model.pt like an artifact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lbdeploy.errors import BackendUnavailable, InputError
from runtime.artifact import checkpoint_manifest


class TorchBackend:
    """Eval-mode PyTorch model from a model.pt.

    Args:
        model_pt: path of the checkpoint.
        manifest: when empty or None, built from the checkpoint and exposed as `.manifest`).
        threads: torch intra-op threads (None: torch's default).
    """

    def __init__(self, model_pt: Path, manifest: dict | None = None, threads: int | None = None):
        try:
            import torch
        except ImportError as err:
            raise BackendUnavailable("torch is not installed; pip install 'lbdeploy[torch]'") from err
        from lbdeploy.checkpoint import load_model

        self._torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        self.model, checkpoint = load_model(model_pt)
        if not manifest:
            height, width = checkpoint.metadata.get("input_size", checkpoint.config.get("input_size", (256, 256)))
            with torch.inference_mode():
                outputs = self.model(torch.zeros(1, 3, int(height), int(width)))
            shapes = [list(out.shape) for out in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]
            manifest = checkpoint_manifest(checkpoint.arch, checkpoint.config, checkpoint.metadata, shapes)
        self.manifest = manifest
        self.input_names = [manifest["input"]["name"]]
        self.output_names = [out["name"] for out in manifest["outputs"]]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model; returns each stack's heatmaps under the manifest's output names."""
        if set(inputs) != set(self.input_names):
            raise InputError(f"expected inputs {self.input_names}, got {sorted(inputs)}")
        torch = self._torch
        with torch.inference_mode():
            outputs = self.model(torch.from_numpy(np.ascontiguousarray(inputs[self.input_names[0]])))
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return {name: out.numpy() for name, out in zip(self.output_names, outputs)}
