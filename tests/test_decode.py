"""Heatmap decoding and the flip test (lbdeploy.pose.decode) on synthetic heatmaps with known peaks."""

import numpy as np
import pytest

from lbdeploy.errors import InputError
from lbdeploy.pose.decode import (
    average_flip,
    decode_heatmaps,
    flip_back,
    heatmap_to_input,
    swap_joints,
)
from lbdeploy.pose.skeletons import LSP, MPII


def _peak(h=16, w=12, x=5, y=7, value=1.0, fill=0.0):
    maps = np.full((1, 1, h, w), fill, dtype=np.float32)
    maps[0, 0, y, x] = value
    return maps


def _gaussian(h, w, cx, cy, sigma=1.5):
    ys, xs = np.mgrid[0:h, 0:w]
    return np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2)).astype(np.float32)


@pytest.mark.parametrize("dx, dy, expected", [
    (+1, 0, (5.25, 7.0)), (-1, 0, (4.75, 7.0)), (0, +1, (5.0, 7.25)), (0, -1, (5.0, 6.75)),
    (+1, +1, (5.25, 7.25)), (-1, -1, (4.75, 6.75)),
])
def test_quarter_pixel_shift_toward_higher_neighbour(dx, dy, expected):
    maps = _peak()
    if dx:
        maps[0, 0, 7, 5 + dx] = 0.5
    if dy:
        maps[0, 0, 7 + dy, 5] = 0.5
    coords, scores = decode_heatmaps(maps)
    np.testing.assert_allclose(coords[0, 0], expected)
    assert scores[0, 0] == pytest.approx(1.0)


def test_equal_neighbours_do_not_shift():
    maps = _peak()
    maps[0, 0, 7, 4] = maps[0, 0, 7, 6] = 0.3
    coords, _ = decode_heatmaps(maps)
    np.testing.assert_allclose(coords[0, 0], (5.0, 7.0))


@pytest.mark.parametrize("x, y", [(0, 0), (11, 15), (0, 15), (11, 0)])
def test_peaks_on_borders_are_not_shifted(x, y):
    maps = np.zeros((1, 1, 16, 12), dtype=np.float32)
    maps[0, 0] = 0.1  # every neighbour is lower; the off-map side must not count
    maps[0, 0, y, x] = 1.0
    maps[0, 0, y, 1 if x == 0 else 10] = 0.5
    coords, _ = decode_heatmaps(maps)
    np.testing.assert_allclose(coords[0, 0], (x, y))


def test_flat_map_decodes_to_first_pixel_with_its_value():
    coords, scores = decode_heatmaps(np.full((2, 3, 8, 8), 0.25, dtype=np.float32))
    np.testing.assert_array_equal(coords, np.zeros((2, 3, 2)))
    np.testing.assert_allclose(scores, 0.25)


def test_negative_map_finds_the_least_negative_pixel():
    maps = _peak(value=-0.1, fill=-2.0)
    maps[0, 0, 7, 6] = -0.5
    coords, scores = decode_heatmaps(maps)
    np.testing.assert_allclose(coords[0, 0], (5.25, 7.0))
    assert scores[0, 0] == pytest.approx(-0.1)


def test_batch_and_joints_are_independent():
    rng = np.random.default_rng(1)
    maps = rng.random((3, 4, 10, 9)).astype(np.float32) * 0.1
    truth = rng.integers(1, 8, size=(3, 4, 2))
    for n in range(3):
        for j in range(4):
            maps[n, j, truth[n, j, 1], truth[n, j, 0]] = 2.0 + n + j
    coords, scores = decode_heatmaps(maps)
    assert np.all(np.abs(coords - truth) <= 0.25)
    np.testing.assert_allclose(scores, 2.0 + np.arange(3)[:, None] + np.arange(4)[None, :])


def test_subpixel_peak_of_gaussian_is_within_a_quarter_pixel():
    maps = _gaussian(32, 32, 12.4, 20.7)[None, None]
    coords, _ = decode_heatmaps(maps)
    assert abs(coords[0, 0, 0] - 12.4) <= 0.25 and abs(coords[0, 0, 1] - 20.7) <= 0.3


@pytest.mark.parametrize("bad", [np.zeros((4, 4)), np.zeros((1, 2, 3)), np.zeros((1, 0, 4, 4))])
def test_bad_heatmap_shapes_are_refused(bad):
    with pytest.raises(InputError):
        decode_heatmaps(bad)


def test_heatmap_to_input_scales_by_stride():
    np.testing.assert_allclose(heatmap_to_input(np.array([[[1.25, 2.0]]]), 4), [[[5.0, 8.0]]])


def test_swap_joints_exchanges_pairs_and_is_an_involution():
    maps = np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1)
    swapped = swap_joints(maps, [(0, 5), (1, 3)])
    assert swapped[0, :, 0, 0].tolist() == [5, 3, 2, 1, 4, 0]
    np.testing.assert_array_equal(swap_joints(swapped, [(0, 5), (1, 3)]), maps)


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_flip_back_aligns_the_mirrored_crop_with_the_original(stride):
    """A joint at input x appears at (W_in - 1 - x) / stride in the mirrored crop's heatmap of its
    flip partner; flipping back must put its centroid at x / stride."""
    w_in, h_hm = 64, 8
    w_hm = w_in // stride
    left_x, right_x = 27.0, 38.0  # input pixels of joint 0 (left) and joint 1 (right)
    mirrored = np.stack([
        _gaussian(h_hm, w_hm, (w_in - 1 - right_x) / stride, 4.0),  # channel 0 shows joint 1 mirrored
        _gaussian(h_hm, w_hm, (w_in - 1 - left_x) / stride, 4.0),
    ])[None]
    back = flip_back(mirrored, [(0, 1)], stride)
    xs = np.arange(w_hm)
    for joint, x_in in ((0, left_x), (1, right_x)):
        profile = back[0, joint].sum(axis=0)
        assert (profile * xs).sum() / profile.sum() == pytest.approx(x_in / stride, abs=2e-3)


def test_average_flip_of_consistent_predictions_keeps_the_peak():
    stride, w_in = 4, 64
    original = np.stack([_gaussian(16, 16, 5.0, 6.0), _gaussian(16, 16, 10.0, 6.0)])[None]
    mirrored = np.stack([_gaussian(16, 16, (w_in - 1 - 40.0) / stride, 6.0),
                         _gaussian(16, 16, (w_in - 1 - 20.0) / stride, 6.0)])[None]
    coords, _ = decode_heatmaps(average_flip(original, mirrored, [(0, 1)], stride))
    np.testing.assert_allclose(coords[0], [[5.0, 6.0], [10.0, 6.0]], atol=0.25)


@pytest.mark.parametrize("joint_set", [MPII, LSP], ids=["mpii", "lsp"])
def test_dataset_flip_pairs_swap_left_and_right_names(joint_set):
    paired = set()
    for a, b in joint_set.flip_pairs:
        names = {joint_set.joints[a], joint_set.joints[b]}
        assert {name[:2] for name in names} == {"l_", "r_"} and len({name[2:] for name in names}) == 1
        paired |= {a, b}
    unpaired = [name for i, name in enumerate(joint_set.joints) if i not in paired]
    assert all(not name.startswith(("l_", "r_")) for name in unpaired)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_heatmap_decodes_to_a_not_found_joint(bad):
    maps = np.concatenate([_peak(x=3, y=4, value=0.8), _peak(x=5, y=7)], axis=1)  # joints 0 and 1
    maps[0, 1] = _gaussian(16, 12, 6, 8) * 2.0
    maps[0, 1, 2, 2] = bad  # one bad pixel anywhere spoils joint 1 only
    coords, scores = decode_heatmaps(maps)
    assert np.isfinite(coords).all() and np.isfinite(scores).all()
    assert scores[0, 1] == 0.0 and tuple(coords[0, 1]) == (0.0, 0.0)
    assert scores[0, 0] == pytest.approx(0.8) and tuple(coords[0, 0]) == (3.0, 4.0)


def test_an_all_nan_flip_average_decodes_to_not_found():
    maps = np.full((2, 3, 8, 8), np.nan, dtype=np.float32)
    coords, scores = decode_heatmaps(average_flip(maps, maps, [(0, 1)], stride=4))
    assert (scores == 0.0).all() and (coords == 0.0).all()
