"""Datasets and training crops: the synthetic set, heatmap targets, augmentation, MPII and LSP loaders.

MPII and LSP are tested on tiny fixture files written here in the real layouts (JSON lists,
joints.mat as 3x14xN and 14x3xN, JPEG images).
"""

import json

import numpy as np
import pytest
from PIL import Image

from lbdeploy.data import open_dataset
from lbdeploy.data.augment import Augmentation, AugmentConfig, crop_matrix_for, draw_augmentation, training_crop, training_sample
from lbdeploy.data.heatmaps import gaussian_heatmaps, sigma_for
from lbdeploy.data.synthetic import SyntheticPoses
from lbdeploy.errors import ConfigError, InputError
from lbdeploy.pose.affine import apply_affine
from lbdeploy.pose.skeletons import MPII

# --- synthetic set ---------------------------------------------------------------------------------


def test_synthetic_samples_are_a_function_of_seed_split_and_index():
    a, b = SyntheticPoses("train", size=10, seed=3), SyntheticPoses("train", size=10, seed=3)
    ra, rb = a.record(7), b.record(7)
    assert np.array_equal(ra.joints, rb.joints) and ra.head_box == rb.head_box
    assert np.array_equal(a.load_image(ra), b.load_image(rb))
    other_seed = SyntheticPoses("train", size=10, seed=4).record(7)
    other_split = SyntheticPoses("val", size=10, seed=3).record(7)
    assert not np.allclose(ra.joints, other_seed.joints)
    assert not np.allclose(ra.joints, other_split.joints)


def test_synthetic_annotations_fit_the_image_and_the_head_box_holds_the_head():
    data = SyntheticPoses("val", size=20, seed=0)
    for i in range(len(data)):
        record = data.record(i)
        image = data.load_image(record)
        assert image.shape == (data.image_size, data.image_size, 3) and image.dtype == np.uint8
        assert record.joints.shape == (16, 2) and record.visible.all()
        assert (record.joints >= 0).all() and (record.joints < data.image_size).all()
        x1, y1, x2, y2 = record.head_box
        for joint in (8, 9):  # upper_neck, head_top
            x, y = record.joints[joint]
            assert x1 - 1 <= x <= x2 + 1 and y1 - 1 <= y <= y2 + 1
        assert record.scale * 200 > np.ptp(record.joints, axis=0).max()


def test_synthetic_figures_put_the_left_shoulder_on_the_image_right_of_the_body_axis():
    data = SyntheticPoses("train", size=30, seed=1)
    for i in range(len(data)):
        j = data.record(i).joints
        up = j[9] - j[8]  # neck -> head top
        side = j[13] - j[12]  # right shoulder -> left shoulder
        assert up[0] * side[1] - up[1] * side[0] > 0  # a clockwise turn in image coordinates


def test_synthetic_spec_sizes_and_errors():
    assert len(open_dataset("synthetic:12,5", "train")) == 12
    assert len(open_dataset("synthetic:12,5", "val")) == 5
    with pytest.raises(ConfigError):
        open_dataset("synthetic:many", "train")
    with pytest.raises(ConfigError):
        open_dataset("coco:/x", "train")
    with pytest.raises(ConfigError):
        open_dataset("mpii", "train")
    with pytest.raises(IndexError):
        SyntheticPoses("val", size=3).record(3)


# --- heatmaps and augmentation ---------------------------------------------------------------------


def test_gaussian_targets_peak_at_the_joint_and_skip_unusable_joints():
    assert sigma_for(64) == 1.0 and sigma_for(32) == 0.5
    joints = np.array([[10.0, 5.0], [3.5, 3.0], [40.0, 2.0], [1.0, 1.0]])
    visible = np.array([True, True, True, False])
    maps, weights = gaussian_heatmaps(joints, visible, (32, 16), sigma=1.0)
    assert maps.shape == (4, 16, 32)
    assert maps[0, 5, 10] == 1.0 and np.unravel_index(maps[0].argmax(), maps[0].shape) == (5, 10)
    assert maps[0, 5, 11] == pytest.approx(np.exp(-0.5))
    assert maps[0, 5, 14] == 0.0  # beyond 3 sigma
    assert maps[1, 3, 3] == maps[1, 3, 4] == pytest.approx(np.exp(-0.125))  # sub-pixel centre
    assert weights.tolist() == [1.0, 1.0, 0.0, 0.0]  # outside the map, not annotated
    assert not maps[2].any() and not maps[3].any()


def test_plain_crop_uses_the_record_geometry():
    data = SyntheticPoses("val", size=2)
    record = data.record(0)
    pixels, joints, visible = training_crop(data, record, (64, 64))
    assert pixels.shape == (64, 64, 3)
    assert np.allclose(joints, apply_affine(record.joints, crop_matrix_for(record, (64, 64))))
    assert (joints >= 0).all() and (joints < 64).all()  # the padded person box covers every joint


def test_flip_mirrors_the_crop_and_swaps_left_and_right():
    data = SyntheticPoses("val", size=2)
    record = data.record(1)
    plain, joints, _ = training_crop(data, record, (64, 64), Augmentation())
    mirrored, flipped_joints, _ = training_crop(data, record, (64, 64), Augmentation(flip=True))
    assert np.abs(mirrored.astype(int) - plain[:, ::-1].astype(int)).max() <= 1
    for left, right in MPII.flip_pairs:
        assert np.allclose(flipped_joints[left], [63 - joints[right][0], joints[right][1]])
    assert np.allclose(flipped_joints[6], [63 - joints[6][0], joints[6][1]])  # pelvis stays


def test_rotation_and_zoom_move_joints_about_the_crop_centre():
    data = SyntheticPoses("val", size=2)
    record = data.record(0)
    _, joints, _ = training_crop(data, record, (64, 64))
    _, turned, _ = training_crop(data, record, (64, 64), Augmentation(zoom=2.0, degrees=90.0))
    centre = np.array([32.0, 32.0])
    expected = (joints - centre) / 2.0
    expected = np.stack([-expected[:, 1], expected[:, 0]], axis=1) + centre  # +90 degrees, y down
    assert np.allclose(turned, expected, atol=1e-9)


def test_augmentation_draws_stay_in_the_paper_ranges():
    rng = np.random.default_rng(0)
    draws = [draw_augmentation(rng, AugmentConfig()) for _ in range(300)]
    assert all(0.75 <= d.zoom <= 1.25 and -30 <= d.degrees <= 30 for d in draws)
    assert all(0.8 <= g <= 1.2 for d in draws for g in d.gains)
    assert 100 < sum(d.flip for d in draws) < 200


def test_training_sample_targets_follow_the_augmented_joints():
    data = SyntheticPoses("train", size=2)
    aug = Augmentation(zoom=1.1, degrees=12.0, flip=True, gains=(1.1, 0.9, 1.0))
    _, joints, _ = training_crop(data, data.record(0), (64, 64), aug)
    pixels, maps, weights = training_sample(data, 0, (64, 64), 4, 0.5, aug)
    assert maps.shape == (16, 16, 16) and pixels.shape == (64, 64, 3)
    for j in np.flatnonzero(weights):
        y, x = np.unravel_index(maps[j].argmax(), maps[j].shape)
        assert abs(x - joints[j, 0] / 4) <= 0.5 and abs(y - joints[j, 1] / 4) <= 0.5


# --- MPII ------------------------------------------------------------------------------------------


def _write_image(path, size=(60, 80)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 128, dtype=np.uint8)).save(path)


def _mpii_joints(offset):
    return [[offset + j + 1.0, 2.0 * j + 1.0] for j in range(16)]


def test_mpii_per_split_json_layout(tmp_path):
    entry = {"image": "a.jpg", "joints": _mpii_joints(10), "joints_vis": [1] * 15 + [0],
             "center": [31.0, 41.0], "scale": 0.2, "headbox": [[11.0, 21.0], [41.0, 61.0]]}
    missing = dict(entry, image="b.jpg", joints=[[-1.0, -1.0]] + _mpii_joints(0)[1:], joints_vis=[1] * 16)
    (tmp_path / "annot").mkdir()
    (tmp_path / "annot" / "train.json").write_text(json.dumps([entry, missing]))
    (tmp_path / "annot" / "valid.json").write_text(json.dumps([entry]))
    _write_image(tmp_path / "images" / "a.jpg")
    train = open_dataset(f"mpii:{tmp_path}", "train")
    assert len(train) == 2 and len(open_dataset(f"mpii:{tmp_path}", "val")) == 1
    record = train.record(0)
    assert np.allclose(record.joints[3], [13.0, 6.0])  # 1-based -> 0-based
    assert record.visible.tolist() == [True] * 15 + [False]
    assert np.allclose(record.center, [30.0, 40.0 + 15 * 0.2])
    assert record.scale == pytest.approx(0.25)
    assert record.head_box == (10.0, 20.0, 40.0, 60.0)
    assert not train.record(1).visible[0]
    assert train.load_image(record).shape == (80, 60, 3)
    assert (train.metric, train.threshold, train.norm) == ("pckh", 0.5, "head")


def test_mpii_combined_pytorch_pose_layout(tmp_path):
    people = [{"img_paths": f"{i}.jpg", "joint_self": [[x, y, 1.0] for x, y in _mpii_joints(i)],
               "objpos": [20.0, 20.0], "scale_provided": 1.0, "isValidation": float(i % 2)} for i in range(5)]
    (tmp_path / "mpii_annotations.json").write_text(json.dumps(people))
    train, val = open_dataset(f"mpii:{tmp_path}", "train"), open_dataset(f"mpii:{tmp_path}", "val")
    assert [r.image for r in train.records] == ["0.jpg", "2.jpg", "4.jpg"]
    assert [r.image for r in val.records] == ["1.jpg", "3.jpg"]
    assert val.record(0).head_box is None


def test_mpii_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="no MPII annotations"):
        open_dataset(f"mpii:{tmp_path}", "train")
    (tmp_path / "train.json").write_text(json.dumps([{"image": "a.jpg", "joints": [[1, 2]] * 3}]))
    with pytest.raises(InputError, match="entry 0"):
        open_dataset(f"mpii:{tmp_path}", "train")
    with pytest.raises(ConfigError, match="does not exist"):
        open_dataset(f"mpii:{tmp_path / 'nope'}", "train")


# --- LSP -------------------------------------------------------------------------------------------


def test_lsp_original_layout_3x14xN(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    count = 4
    joints = np.zeros((3, 14, count))
    for n in range(count):
        joints[0, :, n] = np.arange(14) + 2.0 + n
        joints[1, :, n] = 2.0 * np.arange(14) + 3.0
    joints[:2, 5, 3] = -1.0  # an unlabelled joint
    savemat(str(tmp_path / "joints.mat"), {"joints": joints})
    for n in range(count):
        _write_image(tmp_path / "images" / f"im{n + 1:04d}.jpg", size=(50, 100))
    train, val = open_dataset(f"lsp:{tmp_path}", "train"), open_dataset(f"lsp:{tmp_path}", "val")
    assert len(train) == 2 and len(val) == 2
    record = val.record(1)  # image 4
    assert record.image.endswith("im0004.jpg")
    assert np.allclose(record.joints[0], [2.0 + 3 - 1, 3.0 - 1])
    assert not record.visible[5] and record.visible.sum() == 13
    assert np.allclose(record.center, [25.0, 50.0]) and record.scale == pytest.approx(0.5)
    assert val.load_image(record).shape == (100, 50, 3)
    assert (val.metric, val.threshold, val.norm) == ("pck", 0.2, "torso")


def test_lspet_layout_14x3xN_is_all_training(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    joints = np.ones((14, 3, 3)) * 5.0
    savemat(str(tmp_path / "joints.mat"), {"joints": joints})
    for n in range(3):
        _write_image(tmp_path / "images" / f"im{n + 1:05d}.jpg")
    train = open_dataset(f"lsp:{tmp_path}", "train")
    assert len(train) == 3 and len(open_dataset(f"lsp:{tmp_path}", "val")) == 0
    assert train.record(2).image.endswith("im00003.jpg")
    assert np.allclose(train.record(0).joints, 4.0)


def test_lsp_rejects_other_shapes(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    savemat(str(tmp_path / "joints.mat"), {"joints": np.zeros((2, 14, 3))})
    with pytest.raises(InputError, match="3x14xN"):
        open_dataset(f"lsp:{tmp_path}", "train")
