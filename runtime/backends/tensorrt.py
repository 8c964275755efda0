"""TensorRT backend: runs an artifact's prebuilt engine (tensorrt/model.engine) on an NVIDIA GPU.

The engine is built on the device by `lbdeploy build-engine` (exporters/tensorrt_engine.py); this
backend registers the artifact's TernaryConv plugin library, deserializes the engine and runs it
with device buffers from cuda-python. The loaders here (import_tensorrt, tensorrt_section,
load_plugin_library) are shared with the engine builder. `tensorrt` and `cuda-python` are imported
when a backend is created, so this module imports anywhere; without them it raises BackendUnavailable.

Interface (shared by every backend): `TensorRTBackend(artifact_dir, manifest, **opts)`,
`input_names`, `output_names`, `run({name: array}) -> {name: array}`, `close()`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lbdeploy.artifact import contained_path
from lbdeploy.runtime.verified import private_copies
from lbdeploy.errors import ArtifactError, BackendUnavailable, InputError, KernelLibraryError

PLUGIN_NOT_FOUND_HINT = "run `bash tensorrt/build.sh` in the artifact on this device first"


def import_tensorrt():
    """Import and return the `tensorrt` module.

    Raises:
        BackendUnavailable: the TensorRT Python package is not installed.
    """
    try:
        import tensorrt
    except ImportError as err:
        raise BackendUnavailable(
            f"the TensorRT Python package is not importable ({err}); on a Jetson install JetPack 6.1+ "
            "(python3-libnvinfer), elsewhere `pip install tensorrt`, or use the ort backend"
        ) from None
    return tensorrt


def tensorrt_section(manifest: dict) -> dict:
    """The manifest's "tensorrt" section (written by exporters.tensorrt.add_tensorrt_files).

    Raises:
        ArtifactError: the artifact was not exported for a Jetson/TensorRT target.
    """
    section = manifest.get("tensorrt")
    if not isinstance(section, dict) or "engine" not in section:
        raise ArtifactError(
            f"this artifact was exported for target {manifest.get('target')!r}, not for TensorRT; "
            "re-export it with --target jetson"
        )
    return section


def load_plugin_library(trt, artifact_dir: Path, section: dict, files: dict) -> None:
    """Register the artifact's TernaryConv plugin with TensorRT's plugin registry (once per process).

    TensorRT loads a private copy of the library's verified bytes (runtime/verified.py): the
    library must be listed in `files` (`lbdeploy build-engine` lists it) with a matching sha256.

    Args:
        trt: the imported tensorrt module.
        artifact_dir: the artifact folder.
        section: the manifest's "tensorrt" section; files: the manifest's "files".
    Raises:
        KernelLibraryError: the library is not built, cannot be loaded, or does not provide the plugin.
        ArtifactError: the library is not listed in `files` or does not match its sha256.
    """
    plugin = section.get("plugin")
    if plugin is None:
        return  # standard-ops export: nothing to load
    registry = trt.get_plugin_registry()
    if registry.get_creator(plugin["name"], plugin["version"], plugin["namespace"]) is not None:
        return
    library = contained_path(artifact_dir, plugin["library"], "TensorRT plugin library")
    if not library.is_file():
        raise KernelLibraryError(f"TensorRT plugin library {library} not found; {PLUGIN_NOT_FOUND_HINT}")
    with private_copies(artifact_dir, files, [plugin["library"]], "TensorRT plugin library") as copies:
        loaded = registry.load_library(str(copies[plugin["library"]]))
    if loaded is None:
        raise KernelLibraryError(
            f"TensorRT could not load {library} (see the TensorRT log above); rebuild it on this device with "
            "`bash tensorrt/build.sh` against the installed TensorRT (>= 10.3)"
        )
    if registry.get_creator(plugin["name"], plugin["version"], plugin["namespace"]) is None:
        raise KernelLibraryError(
            f"{library} loaded but registers no plugin {plugin['name']} version {plugin['version']} "
            f"namespace {plugin['namespace']!r}; rebuild it from this artifact's tensorrt/src"
        )


def import_cudart():
    """Import cuda-python's CUDA runtime bindings (new and old module paths).

    Raises:
        BackendUnavailable: cuda-python is not installed.
    """
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise BackendUnavailable(
                "the TensorRT backend needs cuda-python for device buffers: pip install 'lbdeploy[tensorrt]' "
                "(cuda-python 12.6 for JetPack 6.1/6.2, 12.2 for 6.0), or use the ort backend; `lbdeploy doctor` checks the rest"
            ) from None
    return cudart


def numpy_dtype(trt, dtype) -> np.dtype:
    """The numpy dtype of a TensorRT DataType, from our own table (TensorRT 8.x's helper uses `np.bool`,
    which numpy >= 1.24 removed).

    Raises:
        ArtifactError: a tensor type the backend cannot hand to numpy.
    """
    table = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
             "BOOL": np.bool_, "UINT8": np.uint8}
    for name, numpy_type in table.items():
        if getattr(trt.DataType, name, None) == dtype:
            return np.dtype(numpy_type)
    raise ArtifactError(f"the engine has a tensor of type {dtype}, which the TensorRT backend cannot read; "
                        "rebuild it from a float32 model.onnx")


def _checked(cudart, result, what: str):
    """Unpack a cuda-python (err, *values) result, raising on a CUDA error."""
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        hint = ("cuda-python is newer than this driver's CUDA: install the one of JetPack's CUDA, e.g. "
                "pip install 'cuda-python==12.6.*' on JetPack 6.1/6.2 (`lbdeploy doctor` names it)"
                if "InsufficientDriver" in str(err) else "run `lbdeploy doctor` to see what this machine lacks")
        raise BackendUnavailable(f"CUDA {what} failed with {err}; {hint}")
    return values[0] if len(values) == 1 else values


class TensorRTBackend:
    """Runs tensorrt/model.engine of an artifact; one CUDA stream and reusable device buffers per instance."""

    name = "tensorrt"
    interleave_env: dict = {}  # the GPU does the work; nothing spins on the host cores

    def __init__(self, artifact_dir, manifest: dict, **opts):
        """Load the plugin library and the engine.

        Args:
            artifact_dir: the artifact folder.
            manifest: its parsed manifest.json.
            **opts: `log_level` ("error", "warning", "info"; default "warning"); `serialized_engine`:
                an engine built in this process (build-engine's precision gate), run instead of the
                engine file, so no unlisted file is read.
        Raises:
            BackendUnavailable: tensorrt or cuda-python missing, or no usable GPU.
            ArtifactError: not a TensorRT artifact, engine not built, or built for another GPU/TensorRT.
            KernelLibraryError: the plugin library is missing or unloadable.
        """
        trt = import_tensorrt()
        self._cudart = import_cudart()
        self._trt = trt
        artifact_dir = Path(artifact_dir)
        section = tensorrt_section(manifest)
        levels = {"error": trt.Logger.ERROR, "warning": trt.Logger.WARNING, "info": trt.Logger.INFO}
        self._logger = trt.Logger(levels[opts.get("log_level", "warning")])
        engine_path = contained_path(artifact_dir, section["engine"], "TensorRT engine")
        serialized = opts.get("serialized_engine")
        if serialized is None:
            if not engine_path.is_file():
                raise ArtifactError(
                    f"{engine_path} not found: engines are built on the device; run `lbdeploy build-engine "
                    f"{artifact_dir}` here first"
                )
            with private_copies(artifact_dir, manifest.get("files", {}), [section["engine"]], "TensorRT engine") as copy:
                serialized = copy[section["engine"]].read_bytes()
        load_plugin_library(trt, artifact_dir, section, manifest.get("files", {}))
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(serialized)
        if self._engine is None:
            raise ArtifactError(
                f"TensorRT {trt.__version__} cannot load {engine_path} (built for another GPU or TensorRT "
                f"version?); rebuild it here with `lbdeploy build-engine {artifact_dir}`"
            )
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self._stream = _checked(self._cudart, self._cudart.cudaStreamCreate(), "stream creation")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity in bytes)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        """A device buffer of at least nbytes for tensor `name`, reused across calls."""
        ptr, capacity = self._buffers.get(name, (0, 0))
        if capacity < nbytes:
            if ptr:
                _checked(self._cudart, self._cudart.cudaFree(ptr), "free")
            ptr = int(_checked(self._cudart, self._cudart.cudaMalloc(max(nbytes, 1)), "allocation"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the engine once.

        Args:
            inputs: one array per name in input_names (converted to the engine's input dtype).
        Returns:
            One array per name in output_names.
        Raises:
            InputError: a missing input or a shape outside the engine's batch profile.
            KernelLibraryError: TensorRT reported an execution failure.
        """
        trt, cudart = self._trt, self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        stream = self._stream
        staged = []
        for name in self.input_names:
            if name not in inputs:
                raise InputError(f"missing input {name!r}; the engine takes {self.input_names}")
            dtype = numpy_dtype(trt, self._engine.get_tensor_dtype(name))
            array = np.ascontiguousarray(inputs[name], dtype=dtype)
            if not self._context.set_input_shape(name, array.shape):
                raise InputError(
                    f"input {name!r} of shape {array.shape} is outside the engine's profile; rebuild with "
                    "`lbdeploy build-engine --min-batch/--opt-batch/--max-batch` to cover this batch size"
                )
            ptr = self._device_buffer(name, array.nbytes)
            _checked(cudart, cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, h2d, stream), "copy in")
            self._context.set_tensor_address(name, ptr)
            staged.append(array)  # keep host memory alive until the stream is synchronized
        outputs = {}
        for name in self.output_names:
            shape = tuple(self._context.get_tensor_shape(name))
            array = np.empty(shape, dtype=numpy_dtype(trt, self._engine.get_tensor_dtype(name)))
            self._context.set_tensor_address(name, self._device_buffer(name, array.nbytes))
            outputs[name] = array
        if not self._context.execute_async_v3(int(stream)):
            raise KernelLibraryError("TensorRT failed to run the engine (see its log above)")
        for name, array in outputs.items():
            ptr = self._buffers[name][0]
            _checked(cudart, cudart.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, d2h, stream), "copy out")
        _checked(cudart, cudart.cudaStreamSynchronize(stream), "execution")
        staged.clear()
        return outputs

    def close(self) -> None:
        """Free the device buffers and the stream (the backend cannot run afterwards)."""
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers.clear()
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
