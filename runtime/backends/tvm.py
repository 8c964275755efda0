"""TVM backend: runs an artifact's compiled TVM module (manifest["tvm"]["module"], e.g. tvm/model.so).

Only the TVM runtime is used: the .so is loaded and run by the Relax virtual machine, nothing is
compiled on the device. The module is built for a fixed batch size (manifest["tvm"]["batch"]);
larger batches run as several calls. The module is refused up front when it was built for another
CPU architecture, and a GPU module needs a CUDA device.

To support another device kind, map its manifest "device" string in `_device`.
"""

from __future__ import annotations

import collections
import os
import time

import numpy as np

from lbdeploy.artifact import contained_path
from lbdeploy.runtime.verified import private_copies
from lbdeploy.errors import ArtifactError, BackendUnavailable, InputError
from lbdeploy.kernels.elf import require_host_arch


def _set_threads(threads: int | None) -> None:
    """Size TVM's CPU thread pool: `threads`, else one per usable core.

    TVM reads TVM_NUM_THREADS when its pool first starts (so the first backend of a process
    decides). Its own default on x86 assumes two hardware threads per core and halves the CPU
    count, which leaves one of two cores idle on a VM or a board without SMT.
    """
    if threads:
        os.environ["TVM_NUM_THREADS"] = str(int(threads))
    elif "TVM_NUM_THREADS" not in os.environ:
        os.environ["TVM_NUM_THREADS"] = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                            else os.cpu_count() or 1)


def _device(tvm, kind: str, device_id: int):
    if kind == "cpu":
        return tvm.cpu(0)
    if kind == "cuda":
        device = tvm.cuda(device_id)
        if not device.exist:
            raise BackendUnavailable("this TVM module runs on an NVIDIA GPU, but no CUDA device is visible")
        return device
    raise ArtifactError(f"unknown TVM device {kind!r} in the manifest; re-export the artifact")


class TVMBackend:
    """The Relax VM on an artifact's TVM module.

    Args:
        artifact_dir: the artifact folder.
        manifest: its manifest (with the "tvm" section written by exporters.tvm.compile).
        threads: CPU worker threads (None: one per usable core; see `_set_threads`).
        device_id: the CUDA device for GPU modules.
    Raises:
        BackendUnavailable: TVM is not installed, or no GPU for a GPU module.
        ArtifactError: no TVM module in the artifact. KernelLibraryError: built for another CPU.
    """

    # Engines sharing the cores in one process (profile --compare): TVM's workers must not spin
    # between calls, or they steal the other engine's cores. Read when TVM's pool starts.
    interleave_env = {"TVM_THREAD_POOL_SPIN_COUNT": "0"}

    def __init__(self, artifact_dir, manifest: dict, threads: int | None = None, device_id: int = 0):
        try:
            import tvm
            from tvm.runtime.vm import VirtualMachine
        except ImportError as err:
            raise BackendUnavailable("apache-tvm is not installed; pip install 'lbdeploy[tvm]'") from err
        info = manifest.get("tvm")
        if not info or not info.get("module"):
            raise ArtifactError(
                f"{artifact_dir} has no TVM module; export it with `lbdeploy export --backend tvm`"
            )
        path = contained_path(artifact_dir, info["module"], "TVM module")
        if not path.is_file():
            raise ArtifactError(f"the artifact's TVM module {path} is missing; re-export the artifact")
        require_host_arch(path, "TVM module")
        _set_threads(threads)
        self._tvm = tvm
        self._device = _device(tvm, info.get("device", "cpu"), device_id)
        if "files" in manifest:  # an artifact: load a private copy of the verified bytes (runtime/verified.py)
            with private_copies(artifact_dir, manifest["files"], [info["module"]], "TVM module") as copies:
                module = tvm.runtime.load_module(str(copies[info["module"]]))
        else:  # an exporter's own freshly written folder
            module = tvm.runtime.load_module(str(path))
        self._vm = VirtualMachine(module, self._device)
        self._main = self._vm["main"]
        self._gpu = info.get("device", "cpu") != "cpu"
        self.input_names = list(info["inputs"])
        self.output_names = list(info["outputs"])
        self.batch = int(info.get("batch", 1))
        self._sample_shapes = {name: tuple(shape[1:]) for name, shape in info.get("input_shapes", {}).items()}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the module on named float32 arrays (any batch size); returns every output by name.

        Raises:
            InputError: a missing input, or one of another size than compiled.
        """
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise InputError(f"missing model input(s) {missing}; the model takes {self.input_names}")
        arrays = [np.ascontiguousarray(inputs[name], dtype=np.float32) for name in self.input_names]
        for name, array in zip(self.input_names, arrays):
            expected = self._sample_shapes.get(name)
            if expected is not None and tuple(array.shape[1:]) != expected:
                raise InputError(
                    f"input {name!r} has shape {array.shape}, but the TVM module was compiled for "
                    f"[N, {', '.join(map(str, expected))}]; resize the input or re-export with that size"
                )
        total = arrays[0].shape[0]
        chunks = [self._run_batch([a[start:start + self.batch] for a in arrays])
                  for start in range(0, total, self.batch)]
        return {name: np.concatenate([chunk[i] for chunk in chunks]) for i, name in enumerate(self.output_names)}

    @property
    def vm(self):
        """The Relax VirtualMachine running the module (to call it with non-float inputs, e.g. uint8)."""
        return self._vm

    @property
    def device(self):
        """The TVM device the module runs on."""
        return self._device

    def op_breakdown(self, feeds: dict, runs: int, top: int):
        """Time every call instruction of the Relax VM with an instrument (TVM 0.27 has no VM profiler).

        GPU calls are synchronized after each call so the time is the kernel's; the instrument is
        removed afterwards. Types group kernels without TVM's numbering.
        """
        from lbdeploy.runtime.backends.breakdown import Breakdown, summarize_times, tvm_kernel_family

        totals, calls, starts = collections.defaultdict(float), collections.Counter(), []

        def instrument(func, symbol, before_run, ret_value, *args):
            if before_run:
                starts.append(time.perf_counter())
            else:
                if self._gpu:
                    self._device.sync()
                totals[symbol] += time.perf_counter() - starts.pop()
                calls[symbol] += 1
            return 0  # VMInstrumentReturnKind.NO_OP

        self._vm.set_instrument(instrument)
        try:
            for _ in range(runs):
                self.run(feeds)
        finally:
            self._vm.set_instrument(None)
        if not totals:
            return Breakdown(False, "the TVM module made no VM calls that could be timed")
        by_type, type_calls = collections.defaultdict(float), collections.Counter()
        for symbol, seconds in totals.items():
            by_type[tvm_kernel_family(symbol)] += seconds
            type_calls[tvm_kernel_family(symbol)] += calls[symbol]
        return Breakdown(True, "TVM Relax VM instrument: wall time per VM call (kernels and vm.builtin.* steps); "
                               "types group kernels without TVM's numbering", runs,
                         summarize_times(by_type, type_calls, runs, top), summarize_times(totals, calls, runs, top))

    def _run_batch(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        count = arrays[0].shape[0]
        if count < self.batch:  # the module's batch is fixed: pad the last chunk, drop the padding
            arrays = [np.concatenate([a, np.zeros((self.batch - count, *a.shape[1:]), a.dtype)]) for a in arrays]
        result = self._main(*[self._tvm.runtime.tensor(a, self._device) for a in arrays])
        outputs = [result] if len(self.output_names) == 1 else list(result)
        return [out.numpy()[:count] for out in outputs]
