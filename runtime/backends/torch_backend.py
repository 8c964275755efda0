"""PyTorch backend: runs a model.pt checkpoint directly (the reference for every exported backend).

This is the only runtime module that imports torch. It rebuilds the network with
`lbdeploy.checkpoint.load_model` and derives the manifest equivalent from the checkpoint metadata
(output shapes from one dry run), so a Predictor can treat a model.pt like an artifact.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import numpy as np

from lbdeploy.artifact import checkpoint_manifest
from lbdeploy.backends import STANDARD, BackendSpec
from lbdeploy.errors import BackendUnavailable, InputError


class TorchBackend:
    """Eval-mode PyTorch model from a model.pt.

    Args:
        model_pt: path of the checkpoint.
        manifest: when empty or None, built from the checkpoint and exposed as `.manifest`).
        threads: torch intra-op threads (None: torch's default).
    """

    interleave_env: dict = {}

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

    def op_breakdown(self, feeds: dict, runs: int, top: int):
        """torch.profiler self CPU time per aten op (no double counting of nested ops) and wall
        time per leaf module (forward hooks)."""
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        from lbdeploy.runtime.backends.breakdown import Breakdown, native_output_silenced, summarize_times

        with native_output_silenced(), torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                self.run(feeds)
        by_type, type_calls = {}, {}
        for event in prof.key_averages():
            if event.self_cpu_time_total > 0:
                by_type[event.key] = event.self_cpu_time_total * 1e-6
                type_calls[event.key] = event.count
        by_node, node_calls = self._module_times(feeds, runs)
        return Breakdown(True, "torch.profiler self CPU time per op; per node: wall time of each leaf module "
                               "(forward hooks)", runs, summarize_times(by_type, type_calls, runs, top),
                         summarize_times(by_node, node_calls, runs, top))

    def _module_times(self, feeds: dict, runs: int) -> tuple[dict, dict]:
        """Wall time per leaf module ("name (Type)") over `runs` runs, from forward pre/post hooks."""
        totals, calls, starts, handles = collections.defaultdict(float), collections.Counter(), {}, []
        for name, module in self.model.named_modules():
            if any(True for _ in module.children()):
                continue
            key = f"{name} ({type(module).__name__})"

            def before(_module, _inputs, key=key):
                starts[key] = time.perf_counter()

            def after(_module, _inputs, _output, key=key):
                totals[key] += time.perf_counter() - starts.pop(key)
                calls[key] += 1

            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
        try:
            for _ in range(runs):
                self.run(feeds)
        finally:
            for handle in handles:
                handle.remove()
        return totals, calls


BACKEND = BackendSpec("torch", "PyTorch eager on a model.pt (the reference)", "torch", TorchBackend, ops=(STANDARD,),
                      imports=("torch",), rank=0)
