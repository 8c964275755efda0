"""PCK / PCKh on hand-computed cases: thresholds, ties, invisible joints, groups, the curve."""

import math

import numpy as np
import pytest

from lbdeploy.data.records import PoseRecord
from lbdeploy.errors import ConfigError
from lbdeploy.evaluation.pck import (
    format_reports,
    normalized_distances,
    pck_per_joint,
    pck_report,
    reference_length,
)
from lbdeploy.pose.skeletons import LSP, MPII


def _record(joints=None, visible=None, head_box=None, count=16):
    joints = np.zeros((count, 2)) if joints is None else np.asarray(joints, dtype=float)
    visible = np.ones(count, dtype=bool) if visible is None else np.asarray(visible, dtype=bool)
    return PoseRecord(image=0, joints=joints, visible=visible, center=np.zeros(2), scale=1.0, head_box=head_box)


def test_head_size_is_six_tenths_of_the_head_box_diagonal():
    # A 30 x 40 box has a 50 pixel diagonal.
    assert reference_length(_record(head_box=(10, 20, 40, 60)), "head", MPII) == pytest.approx(30.0)


def test_head_size_without_a_box_is_the_head_segment():
    joints = np.zeros((16, 2))
    joints[8] = (5, 10)  # upper_neck
    joints[9] = (5, 30)  # head_top
    assert reference_length(_record(joints), "head", MPII) == pytest.approx(20.0)


def test_torso_is_left_shoulder_to_right_hip():
    joints = np.zeros((14, 2))
    joints[9] = (0, 0)  # l_shoulder
    joints[2] = (6, 8)  # r_hip
    assert reference_length(_record(joints, count=14), "torso", LSP) == pytest.approx(10.0)
    hidden = np.ones(14, dtype=bool)
    hidden[2] = False
    assert reference_length(_record(joints, hidden, count=14), "torso", LSP) == 0.0


def test_unknown_norm_is_refused():
    with pytest.raises(ConfigError):
        reference_length(_record(), "elbow", MPII)


def test_a_distance_exactly_at_the_threshold_counts_as_correct():
    truth = np.zeros((1, 3, 2))
    predictions = np.array([[[9.0, 12.0], [9.0, 12.001], [0.0, 0.0]]])  # 15 px, just above 15, 0
    scaled = normalized_distances(predictions, truth, np.ones((1, 3), bool), np.array([30.0]))
    assert scaled[0, 0] == 0.5  # exactly, no rounding
    correct, count = pck_per_joint(scaled, 0.5)
    assert correct.tolist() == [1, 0, 1]
    assert count.tolist() == [1, 1, 1]


def test_invisible_joints_and_unmeasurable_people_are_left_out():
    truth = np.zeros((2, 2, 2))
    predictions = np.full((2, 2, 2), 100.0)  # all far off
    visible = np.array([[True, False], [True, True]])
    lengths = np.array([10.0, 0.0])  # second person: no reference length
    correct, count = pck_per_joint(normalized_distances(predictions, truth, visible, lengths), 0.5)
    assert count.tolist() == [1, 0]
    assert correct.tolist() == [0, 0]


def test_report_groups_and_total_are_pooled_over_joints():
    people = 2
    truth = np.zeros((people, 16, 2))
    predictions = np.zeros((people, 16, 2))
    visible = np.ones((people, 16), dtype=bool)
    lengths = np.array([10.0, 10.0])
    predictions[0, 10] = (6.0, 0.0)  # r_wrist of person 0: 0.6 > 0.5, wrong
    predictions[1, 15] = (5.0, 0.0)  # l_wrist of person 1: exactly 0.5, right
    predictions[:, 6] = (50.0, 0.0)  # pelvis wrong everywhere: not in any group, not in Total
    visible[1, 0] = False  # r_ankle of person 1 not annotated
    report = pck_report(normalized_distances(predictions, truth, visible, lengths), MPII, 0.5, "head")
    assert report.metric == "PCKh" and report.people == 2
    assert report.groups["Wrist"] == pytest.approx(75.0)  # 3 of 4
    assert report.groups["Ankle"] == pytest.approx(100.0)  # 3 of 3 annotated
    assert report.groups["Head"] == pytest.approx(100.0)
    # Total over the 14 grouped joints: 28 - 1 unannotated = 27 counted, 1 wrong.
    assert report.total == pytest.approx(100.0 * 26 / 27)
    assert report.joints["pelvis"] == 0.0
    assert list(report.groups) == ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total"]


def test_curve_rises_with_the_threshold_and_ends_at_twice_it():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 100, size=(20, 14, 2))
    predictions = truth + rng.normal(0, 3, size=truth.shape)
    scaled = normalized_distances(predictions, truth, np.ones((20, 14), bool), np.full(20, 20.0))
    report = pck_report(scaled, LSP, 0.2, "torso")
    thresholds = [t for t, _ in report.curve]
    values = [v for _, v in report.curve]
    assert thresholds[0] == 0.0 and thresholds[-1] == pytest.approx(0.4)
    assert values == sorted(values)
    assert report.metric == "PCK"
    assert dict(report.curve)[0.2] == pytest.approx(report.total)


def test_empty_group_is_nan_and_json_turns_it_into_null():
    scaled = np.full((1, 14), np.nan)
    report = pck_report(scaled, LSP, 0.2, "torso")
    assert math.isnan(report.total)
    assert report.to_dict()["groups"]["Total"] is None


def test_side_by_side_table_has_a_column_per_report():
    scaled = np.zeros((1, 16))
    report = pck_report(scaled, MPII, 0.5, "head")
    table = format_reports({"torch": report, "ort": report})
    assert "torch" in table.splitlines()[0] and "ort" in table.splitlines()[0]
    assert "Total" in table and "@0.5" in table


def test_shape_mismatch_is_refused():
    with pytest.raises(ConfigError):
        normalized_distances(np.zeros((1, 16, 2)), np.zeros((1, 14, 2)), np.ones((1, 16), bool), np.ones(1))
