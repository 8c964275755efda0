"""Build a TensorRT engine for an exported Jetson artifact, on the device that will run it.

`build_engine(artifact)` verifies the artifact (manifest + sha256 of its files), loads its
TernaryConv plugin library (tensorrt/libternary_trt.so, built on the board by tensorrt/build.sh),
parses model.onnx with TensorRT's ONNX parser, builds with an optimization profile over the batch
size and a persistent timing cache, and writes tensorrt/model.engine plus tensorrt/engine.json
(how it was built).

`tensorrt` is imported lazily: this module imports on machines without it, and build_engine
raises BackendUnavailable there. To add a builder option: add it to build_engine, record it in
engine.json, and expose it in commands/tensorrt.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from lbdeploy.exporters.onnx import check_ternary_initializers
from lbdeploy.errors import ArtifactError, BackendUnavailable, ConfigError, ExportError, KernelLibraryError
from lbdeploy.artifact import MODEL_FILE, contained_path, open_artifact, record_files
from lbdeploy.files import replace_bytes
from lbdeploy.runtime.backends.tensorrt import import_tensorrt, load_plugin_library, tensorrt_section

TIMING_CACHE = "timing.cache"
ENGINE_INFO = "engine.json"


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes an engine accepts (min <= opt <= max); opt is the one it is tuned for."""

    min: int = 1
    opt: int = 1
    max: int = 1

    def __post_init__(self):
        if not 1 <= self.min <= self.opt <= self.max:
            raise ConfigError(
                f"batch profile must satisfy 1 <= min <= opt <= max, got min={self.min} opt={self.opt} "
                f"max={self.max}; fix --min-batch/--opt-batch/--max-batch"
            )


def profile_shapes(name: str, shape: tuple[int, ...], batch: BatchProfile) -> tuple[tuple, tuple, tuple]:
    """(min, opt, max) shapes of one network input for the batch profile.

    Args:
        name: the input's name (for messages).
        shape: the input's shape as TensorRT parsed it (-1 for a dynamic dimension).
        batch: the requested batch sizes.
    Raises:
        ConfigError: the input's non-batch dimensions are dynamic, or its batch is fixed to another size.
    """
    if len(shape) == 0:
        raise ConfigError(f"input {name!r} is a scalar; lbdeploy models take batched NCHW images")
    dynamic_rest = [i for i, d in enumerate(shape[1:], start=1) if d < 0]
    if dynamic_rest:
        raise ConfigError(
            f"input {name!r} has dynamic dimensions {dynamic_rest} besides the batch ({list(shape)}); "
            "re-export with a fixed input size"
        )
    fixed = shape[0]
    if fixed >= 0 and (batch.min, batch.opt, batch.max) != (fixed, fixed, fixed):
        raise ConfigError(
            f"model.onnx fixes the batch of input {name!r} to {fixed}, but the profile asks for "
            f"min={batch.min} opt={batch.opt} max={batch.max}; use --min-batch {fixed} --opt-batch {fixed} "
            f"--max-batch {fixed} or re-export with a dynamic batch"
        )
    rest = tuple(shape[1:])
    return (batch.min, *rest), (batch.opt, *rest), (batch.max, *rest)


def _network_flags(trt) -> int:
    """Network creation flags: explicit batch (implied from TensorRT 10 on, a flag before)."""
    if int(trt.__version__.split(".")[0]) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _parse_onnx(trt, network, logger, onnx_path: Path) -> None:
    """Parse model.onnx into `network`, turning parser errors into lbdeploy errors."""
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return
    messages = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    text = "; ".join(messages) or "no details"
    if any("TernaryConv" in m or "plugin" in m.lower() for m in messages):
        raise KernelLibraryError(
            f"TensorRT's ONNX parser did not find the TernaryConv plugin ({text}); check that "
            f"tensorrt/libternary_trt.so was built on this device and that TensorRT is >= 10.3"
        )
    raise ExportError(f"TensorRT could not parse {onnx_path}: {text}")


def _timing_cache(config, path: Path):
    """Attach the timing cache at `path` (empty when absent or unreadable) to `config`; returns it."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None:  # a cache from another TensorRT version or GPU: start afresh
        cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _checked_precision(artifact_dir: Path, manifest: dict, engine: bytes) -> dict:
    """Run the candidate engine beside float32 ONNX Runtime (exporters/engine_precision.py).

    The candidate runs from memory (it is written only once it passes), so a refused engine never
    replaces the one already there and nothing unlisted passes the artifact's trust boundary; the
    plugin is the one this build registered. Returns the report for engine.json; raises ParityError
    when refused.
    """
    from lbdeploy.exporters.engine_precision import check_engine_precision, ort_float32_runner
    from lbdeploy.runtime.backends.tensorrt import TensorRTBackend

    backend = TensorRTBackend(artifact_dir, manifest, serialized_engine=engine)
    try:
        engine_run = lambda images: backend.run({backend.input_names[0]: images})  # noqa: E731
        report = check_engine_precision(ort_float32_runner(artifact_dir, manifest), engine_run, manifest)
    finally:
        backend.close()
    return report.to_dict()


def _verified_plugin(artifact_dir: Path, manifest: dict, section: dict, trust_plugin: bool) -> dict:
    """The manifest once the plugin library is listed: listed already, or built here and `trust_plugin` given.

    Raises:
        ArtifactError: the library exists but is not listed and `trust_plugin` is False.
    """
    library = (section.get("plugin") or {}).get("library")
    if not library or library in manifest["files"]:
        return manifest
    if not contained_path(artifact_dir, library, "TensorRT plugin library").is_file():
        return manifest  # load_plugin_library says how to build it
    if not trust_plugin:
        raise ArtifactError(
            f"the TensorRT plugin library {library} is not listed in the manifest, so it cannot be verified and was "
            "not loaded; if you built it here with `bash tensorrt/build.sh`, run build-engine with --trust-plugin "
            "to record it")
    return record_files(artifact_dir, [library])


def build_engine(
    artifact_dir: Path,
    fp16: bool = False,
    workspace_mb: int = 1024,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 1,
    trust_plugin: bool = False,
) -> Path:
    """Build ARTIFACT/tensorrt/model.engine from ARTIFACT/model.onnx on this device.

    Args:
        artifact_dir: an artifact exported for a Jetson target, with its plugin library built.
        fp16: allow float16 kernels (the TernaryConv plugin then runs in float16, accumulating in float32);
            the engine is kept only if it passes the precision gate against float32 ONNX Runtime
            (exporters/engine_precision.py).
        workspace_mb: TensorRT's workspace memory-pool limit in MiB.
        min_batch, opt_batch, max_batch: the batch sizes the engine accepts; tuned for opt_batch.
        trust_plugin: list the plugin library that `tensorrt/build.sh` built here in the manifest
            (its sha256) before loading it; without it an unlisted library is refused, never loaded.
    Returns:
        The path of the written engine.
    Raises:
        ConfigError: invalid batch profile or workspace, or a profile the model's input cannot take.
        ArtifactError: no manifest, not a TensorRT artifact, model.onnx missing, or a plugin library
            that is not listed (without `trust_plugin`) or does not match its sha256.
        BackendUnavailable: TensorRT is not installed.
        KernelLibraryError: the plugin library is missing, unloadable, or not found by the parser.
        ExportError: the ONNX parser or the builder failed.
        ParityError: the fp16 engine's keypoints (classes) differ from float32 beyond the tolerances.
            The fp16 check also needs onnxruntime and this machine's TernaryConv kernel library
            (BackendUnavailable / KernelLibraryError when they are missing).
        TernaryWeightError: packed TernaryConv weights hold the invalid code 3 (padding bits included).
    """
    batch = BatchProfile(min_batch, opt_batch, max_batch)
    if workspace_mb < 1:
        raise ConfigError(f"--workspace must be >= 1 MiB, got {workspace_mb}")
    artifact_dir, manifest = open_artifact(artifact_dir)
    section = tensorrt_section(manifest)
    onnx_path = contained_path(artifact_dir, section.get("onnx", MODEL_FILE), "TensorRT ONNX file")
    if not onnx_path.is_file():
        raise ArtifactError(f"{onnx_path} is missing; re-export the model")
    try:
        import onnx
    except ImportError:
        raise BackendUnavailable("build-engine reads model.onnx with the onnx package, which is not installed here; "
                                 "pip install 'lbdeploy[tensorrt]' (a bundle's install.sh brings it)") from None
    check_ternary_initializers(onnx.load(onnx_path))  # the CUDA kernel would read code 3 as 0: refuse it here
    manifest = _verified_plugin(artifact_dir, manifest, section, trust_plugin)
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    load_plugin_library(trt, artifact_dir, section, manifest["files"])

    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    _parse_onnx(trt, network, logger, onnx_path)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16:
        flag = getattr(trt.BuilderFlag, "FP16", None)
        if flag is None:
            raise ConfigError(f"TensorRT {trt.__version__} has no FP16 builder flag; build without --fp16")
        config.set_flag(flag)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        profile.set_shape(tensor.name, *profile_shapes(tensor.name, tuple(tensor.shape), batch))
    config.add_optimization_profile(profile)
    engine_path = contained_path(artifact_dir, section["engine"], "TensorRT engine")
    engine_dir = engine_path.parent
    engine_dir.mkdir(parents=True, exist_ok=True)
    cache_path = engine_dir / TIMING_CACHE
    timing_cache = _timing_cache(config, cache_path)  # TensorRT needs it alive until the build is done

    serialized = builder.build_serialized_network(network, config)
    del timing_cache
    if serialized is None:
        raise ExportError(
            "TensorRT failed to build the engine (see its log above); try a larger --workspace or without --fp16"
        )
    replace_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    precision = _checked_precision(artifact_dir, manifest, bytes(serialized)) if fp16 else None
    replace_bytes(engine_path, bytes(serialized))
    info = {
        "tensorrt": trt.__version__,
        "fp16": fp16,
        "workspace_mb": workspace_mb,
        "batch": asdict(batch),
        "precision_check": precision,
    }
    replace_bytes(engine_dir / ENGINE_INFO, json.dumps(info, indent=2).encode())
    plugin = section.get("plugin") or {}
    record_files(artifact_dir, [section["engine"], *([plugin["library"]] if plugin.get("library") else [])])
    _verify_rewritten(artifact_dir)
    return engine_path


def _verify_rewritten(artifact_dir: Path) -> None:
    """`lbdeploy verify` on the rewritten artifact (hashes, containment, signature with a trusted key).

    Raises:
        ArtifactError: the artifact no longer verifies (a signed one needs `lbdeploy sign` again).
    """
    from lbdeploy.exporters.verify import verify_artifact

    report = verify_artifact(artifact_dir, run_reference=False)
    if not report.ok:
        raise ArtifactError(f"{artifact_dir} fails verification after build-engine: "
                            + "; ".join(line for line in report.lines() if line.startswith("FAIL")))
