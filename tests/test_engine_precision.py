"""The fp16 engine precision gate (exporters/engine_precision.py) on real ONNX Runtime outputs.

TensorRT does not run here, so the "engine" is ONNX Runtime itself with float16 rounding of its input
and output (what an fp16 engine does at least), or with its heatmaps moved; the float32 reference is
the real `ort_float32_runner` on an artifact folder.
"""

import numpy as np
import pytest

from lbdeploy.tasks.pose import KEYPOINT_TOLERANCE
from lbdeploy.exporters.engine_precision import (PRECISION_IMAGES, check_engine_precision,
                                        compare_precision, ort_float32_runner, precision_images)
from lbdeploy.errors import ParityError
from runtime_artifacts import pool_manifest, pool_model, write_artifact

pytest.importorskip("onnxruntime")


@pytest.fixture()
def artifact(tmp_path):
    manifest = pool_manifest()
    return write_artifact(tmp_path / "art", pool_model(), manifest), manifest


def _fp16(array):
    return array.astype(np.float16).astype(np.float32)


def test_fp16_rounded_engine_passes_and_reports(artifact):
    folder, manifest = artifact
    reference = ort_float32_runner(folder, manifest)
    engine = lambda images: {k: _fp16(v) for k, v in reference(_fp16(images)).items()}  # noqa: E731
    report = check_engine_precision(reference, engine, manifest)
    assert report.passed and report.images == PRECISION_IMAGES and report.total == PRECISION_IMAGES * 3
    assert report.agreeing == report.total and 0 < report.max_abs_error < 1e-2
    assert report.to_dict()["keypoint_tolerance"] == KEYPOINT_TOLERANCE


def test_engine_whose_keypoints_move_is_refused(artifact):
    folder, manifest = artifact
    reference = ort_float32_runner(folder, manifest)
    moved = lambda images: {k: np.roll(v, 2, axis=3) for k, v in reference(images).items()}  # noqa: E731
    with pytest.raises(ParityError, match="was not kept.*without --fp16"):
        check_engine_precision(reference, moved, manifest)


def test_precision_images_are_fixed_and_normalized_as_the_manifest_says():
    manifest = pool_manifest(size=(32, 48))
    manifest["input"]["mean"], manifest["input"]["std"] = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    images = precision_images(manifest)
    assert images.shape == (PRECISION_IMAGES, 3, 32, 48) and images.dtype == np.float32
    np.testing.assert_array_equal(images, precision_images(manifest))
    assert images.min() >= -2.0 and images.max() <= 2.0 and images.min() < -1.5


def test_a_swap_between_tied_peaks_is_accepted_a_real_difference_is_not():
    reference = np.zeros((1, 1, 16, 16), np.float32)
    reference[0, 0, 2, 2], reference[0, 0, 12, 12] = 1.0, 0.999  # two peaks 0.1% apart
    candidate = reference.copy()
    candidate[0, 0, 12, 12] = 1.001  # fp16-size change swaps them
    assert compare_precision(reference, candidate, "pose").passed
    reference[0, 0, 12, 12] = 0.9  # 10% apart: a different keypoint
    report = compare_precision(reference, candidate, "pose")
    assert not report.passed and report.worst_keypoint_shift == pytest.approx(10.0)


def test_classification_compares_top1_and_checks_shapes():
    logits = np.array([[0.1, 2.0, 0.3], [1.0, 0.2, 0.0]], np.float32)
    assert compare_precision(logits, logits + 1e-3, "classification").passed
    flipped = logits.copy()
    flipped[1] = [0.0, 0.2, 1.0]
    report = compare_precision(logits, flipped, "classification")
    assert not report.passed and report.agreeing == 1
    with pytest.raises(ParityError, match="shape"):
        compare_precision(logits, logits[:1], "classification")


class _Registry:
    """TensorRT's plugin registry as the backend uses it: creators by name, libraries loaded by path."""

    def __init__(self, registered: bool):
        self.registered, self.loaded = registered, []

    def get_creator(self, name, version, namespace):
        return object() if self.registered else None

    def load_library(self, path):
        self.loaded.append(path)
        self.registered = True
        return object()


def _stand_in_tensorrt(monkeypatch, registered: bool):
    """A stand-in for the `tensorrt` and cuda-python modules (neither runs here): records what the
    backend deserializes and which plugin library it loads."""
    import sys
    import types

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    trt.registry = _Registry(registered)
    trt.deserialized = []
    trt.Logger = type("Logger", (), {"ERROR": 0, "WARNING": 1, "INFO": 2, "__init__": lambda self, level: None})
    trt.TensorIOMode = types.SimpleNamespace(INPUT=0, OUTPUT=1)
    trt.get_plugin_registry = lambda: trt.registry
    engine = types.SimpleNamespace(num_io_tensors=0, create_execution_context=lambda: object())

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            trt.deserialized.append(bytes(data))
            return engine

    trt.Runtime = Runtime
    ok = types.SimpleNamespace(cudaSuccess=0)
    cudart = types.SimpleNamespace(cudaError_t=ok, cudaStreamCreate=lambda: (0, 1), cudaStreamDestroy=lambda s: None)
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    for name, module in (("tensorrt", trt), ("cuda", cuda), ("cuda.bindings", bindings), ("cuda.bindings.runtime", cudart)):
        monkeypatch.setitem(sys.modules, name, module)
    return trt


def _first_build(tmp_path):
    """A Jetson artifact right after build.sh: the plugin library exists but is not listed in `files`."""
    from lbdeploy.artifact import open_artifact

    plugin = {"name": "TernaryConv", "version": "1", "namespace": "", "library": "tensorrt/libternary_trt.so"}
    manifest = {**pool_manifest(), "target": "jetson-orin", "backend": "tensorrt",
                "tensorrt": {"plugin": plugin, "engine": "tensorrt/model.engine", "onnx": "model.onnx"}}
    folder = write_artifact(tmp_path / "jetson", pool_model(), manifest)
    (folder / "tensorrt" / "libternary_trt.so").parent.mkdir(exist_ok=True)
    (folder / "tensorrt" / "libternary_trt.so").write_bytes(b"built on the board")
    return open_artifact(folder)


def test_fp16_gate_runs_the_candidate_from_memory_on_a_first_build(tmp_path, monkeypatch):
    """build-engine --fp16 (issue 25): the candidate is neither a file nor listed, the plugin not listed yet;
    the gate's backend runs the in-memory engine with the plugin this build registered."""
    from lbdeploy.runtime.backends.tensorrt import TensorRTBackend

    trt = _stand_in_tensorrt(monkeypatch, registered=True)  # build_engine registered the plugin before building
    root, manifest = _first_build(tmp_path)
    backend = TensorRTBackend(root, manifest, serialized_engine=b"candidate engine")
    assert trt.deserialized == [b"candidate engine"] and trt.registry.loaded == []
    backend.close()
    assert not (root / "tensorrt" / "model.engine").exists()


def test_the_trust_boundary_still_guards_files_from_disk(tmp_path, monkeypatch):
    from lbdeploy.errors import ArtifactError
    from lbdeploy.runtime.backends.tensorrt import TensorRTBackend

    trt = _stand_in_tensorrt(monkeypatch, registered=False)
    root, manifest = _first_build(tmp_path)
    (root / "tensorrt" / "model.engine").write_bytes(b"unlisted engine")
    with pytest.raises(ArtifactError, match="engine 'tensorrt/model.engine' is not listed in the manifest's 'files'"):
        TensorRTBackend(root, manifest)  # an engine file nobody recorded
    with pytest.raises(ArtifactError, match="TensorRT plugin library"):
        TensorRTBackend(root, manifest, serialized_engine=b"candidate")  # a plugin it would have to load
    assert trt.registry.loaded == [] and trt.deserialized == []
