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
