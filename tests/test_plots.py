"""The Pillow charts: shared axes (lbdeploy/plotting.py), the PCK curve (eval --plot), the profile plot."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lbdeploy.evaluation.pck import pck_report
from lbdeploy.evaluation.plot import write_pck_plot
from lbdeploy.plotting import COLORS, nice_ticks, tick_label
from lbdeploy.pose.skeletons import joint_set
from lbdeploy.runtime.backends.breakdown import Breakdown, native_output_silenced, summarize_times
from lbdeploy.runtime.profiling.plot import write_plot
from lbdeploy.runtime.profiling.report import Measurement, ProfileReport, ProfiledModel


@pytest.mark.parametrize("low, high, expected", [
    (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (40.2, 67.0, [45.0, 50.0, 55.0, 60.0, 65.0]),
    (0.0, 100.0, [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]),
])
def test_nice_ticks_are_round_and_inside(low, high, expected):
    assert nice_ticks(low, high) == pytest.approx(expected)


def test_tick_labels_have_the_decimals_of_the_step():
    assert tick_label(0.2, 0.2) == "0.2" and tick_label(50.0, 5.0) == "50" and tick_label(0.05, 0.05) == "0.05"


def _pixels_of(image, color) -> int:
    return int((np.asarray(image.convert("RGB")) == np.array(color, dtype=np.uint8)).all(axis=2).sum())


def test_pck_plot_draws_one_curve_per_column(tmp_path):
    joints = joint_set(16)
    rng = np.random.default_rng(0)
    reports = {"torch": pck_report(rng.uniform(0, 1, (30, 16)), joints, 0.5, "head"),
               "ort": pck_report(rng.uniform(0, 0.6, (30, 16)), joints, 0.5, "head")}
    path = write_pck_plot(reports, tmp_path / "plots" / "pck.png", "synthetic val")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (820, 520)
        assert _pixels_of(image, COLORS[0]) > 200 and _pixels_of(image, COLORS[1]) > 200  # both curves
        assert _pixels_of(image, COLORS[2]) == 0  # and no third


def _measurement(label, base_ms, ops):
    rng = np.random.default_rng(1)
    breakdown = Breakdown(True, "test", 5, summarize_times(ops, {k: 5 for k in ops}, 5, 10), [])
    samples = list((base_ms + rng.gamma(2.0, base_ms / 20, 40)) / 1e3)
    return Measurement(ProfiledModel(label, Path("out"), label, {}), 1, None, 0.1, base_ms * 1.5, samples, None, breakdown)


def test_profile_plot_has_a_panel_per_result(tmp_path):
    report = ProfileReport([_measurement("ort", 40.0, {"TernaryConv": 0.1, "Conv": 0.08}),
                            _measurement("tvm", 50.0, {"fused_conv2d": 0.12})], 40, 5, None)
    path = write_plot(report, tmp_path / "profile.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width == 900 and image.height > 600
        top, bottom = image.crop((0, 0, 900, 340)), image.crop((0, 340, 900, image.height))
        assert _pixels_of(top, COLORS[0]) > 100 and _pixels_of(top, COLORS[1]) > 100  # histogram of both
        assert _pixels_of(bottom, COLORS[0]) > 500 and _pixels_of(bottom, COLORS[1]) > 500  # op bars of both


def test_native_output_is_silenced_only_inside(capfd):
    import os

    with native_output_silenced():
        os.write(1, b"USDT: profiler_start\n")
        os.write(2, b"USDT: profiler_stop\n")
    os.write(1, b"ours\n")
    out, err = capfd.readouterr()
    assert out == "ours\n" and err == ""


def test_count_axes_have_whole_ticks():
    assert nice_ticks(0.0, 2.6, integer=True) == [0.0, 1.0, 2.0]
    assert nice_ticks(0.0, 2.6) != nice_ticks(0.0, 2.6, integer=True)  # halves otherwise


def test_identical_pck_curves_stay_visible_and_are_named(tmp_path):
    joints = joint_set(16)
    report = pck_report(np.random.default_rng(0).uniform(0, 1, (30, 16)), joints, 0.5, "head")
    path = write_pck_plot({"torch": report, "ort": report}, tmp_path / "pck.png", "synthetic val")
    with Image.open(path) as image:
        assert _pixels_of(image, COLORS[0]) > 200 and _pixels_of(image, COLORS[1]) > 200  # the second hides nothing


def test_one_slow_run_does_not_squeeze_the_histogram(tmp_path):
    from lbdeploy.runtime.profiling.plot import histogram_range

    fast = _measurement("ort", 40.0, {"Conv": 0.1})
    slow = _measurement("tvm", 50.0, {"fused_conv2d": 0.12})
    slow.samples_s[3] = 0.495  # one 495 ms outlier among ~50 ms runs
    low, high = histogram_range([np.asarray(m.samples_s) * 1e3 for m in (fast, slow)])
    assert low == pytest.approx(min(fast.samples_s) * 1e3) and 55 < high < 150
    path = write_plot(ProfileReport([fast, slow], 40, 5, None), tmp_path / "profile.png")
    with Image.open(path) as image:
        top = image.crop((90, 50, 900, 280))
        columns = np.nonzero((np.asarray(top.convert("RGB")) == np.array(COLORS[0], np.uint8)).all(axis=2).any(axis=0))[0]
        assert columns.max() - columns.min() > 100  # the ort runs spread over many bins, not one


def test_pose_overlay_tells_left_from_right():
    from lbdeploy.runtime.predictor import PoseResult
    from lbdeploy.runtime.tasks.pose import SIDE_COLORS, draw_pose

    joints = joint_set(16)
    points = np.array([[40 + 4 * i, 10 + 5 * i] for i in range(16)], np.float32)
    points[[3, 4, 5, 13, 14, 15], 0] += 60  # the left joints to the right side of the image
    result = PoseResult(points[None], np.ones((1, 16), np.float32), np.zeros((1, 2)), np.ones(1), (200, 100),
                        boxes=np.array([[30.0, 5.0, 150.0, 90.0]]))
    image = draw_pose(np.zeros((100, 200, 3), np.uint8), result, joints.skeleton, joints.joints)
    assert _pixels_of(image, SIDE_COLORS["left"]) > 30 and _pixels_of(image, SIDE_COLORS["right"]) > 30
    assert _pixels_of(image, SIDE_COLORS["centre"]) > 10
    small = PoseResult(points[None] / 4, result.scores, result.centers, result.scales, (200, 100),
                       boxes=result.boxes / 4)
    tiny = draw_pose(np.zeros((100, 200, 3), np.uint8), small, joints.skeleton, joints.joints)
    assert _pixels_of(tiny, SIDE_COLORS["left"]) < _pixels_of(image, SIDE_COLORS["left"]) / 4  # marks scale down


def test_sources_of_one_backend_are_labelled_by_what_they_are():
    from lbdeploy.workflows.compare import _unique_labels

    def target(folder, **manifest):
        return ProfiledModel("ort", Path(folder), "ort", manifest)

    labels = [t.label for t in _unique_labels([target("a", precision="int8", ops="custom"),
                                               target("b", precision="fp32", ops="standard"),
                                               target("c", precision="fp32", ops="custom"),
                                               ProfiledModel("tvm", Path("d"), "tvm", {})])]
    assert labels == ["ort int8 custom", "ort fp32 standard", "ort fp32 custom", "tvm"]
    same = [t.label for t in _unique_labels([target("x", precision="fp32"), target("y", precision="fp32")])]
    assert same == ["ort x", "ort y"]  # nothing in the manifests differs: the folder names do
    assert [t.label for t in _unique_labels([target("x"), target("x")])] == ["ort#1", "ort#2"]
