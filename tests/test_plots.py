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
