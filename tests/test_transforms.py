"""Image loading, the affine crop and normalization (lbdeploy.transforms, lbdeploy.pose.affine)."""

import io

import numpy as np
import pytest
from PIL import Image

from lbdeploy.errors import InputError
from lbdeploy.pose.affine import (
    BOX_PADDING,
    apply_affine,
    box_to_center_scale,
    crop_matrix,
    image_center_scale,
    invert_affine,
)
from lbdeploy.transforms import crop, load_image, normalize


def _encode(array, fmt="PNG"):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


# --- geometry -------------------------------------------------------------------------------------

def test_tall_box_keeps_height_and_gets_padded():
    center, scale = box_to_center_scale((10, 20, 50, 200), aspect_ratio=1.0)
    np.testing.assert_allclose(center, (35, 120))
    assert scale == pytest.approx(200 * BOX_PADDING / 200)


def test_wide_box_grows_in_height_to_the_input_aspect():
    center, scale = box_to_center_scale((0, 0, 300, 100), aspect_ratio=0.75, padding=1.0)
    np.testing.assert_allclose(center, (150, 50))
    assert scale == pytest.approx(400 / 200)  # height becomes 300 / 0.75


@pytest.mark.parametrize("box", [(0, 0, 0, 10), (0, 0, 10, -1), (0, 0, float("nan"), 5)])
def test_degenerate_boxes_are_refused(box):
    with pytest.raises(InputError):
        box_to_center_scale(box, 1.0)


def test_whole_image_center_scale_covers_the_image():
    center, scale = image_center_scale(640, 480, aspect_ratio=1.0)
    matrix = crop_matrix(center, scale, (256, 256))
    corners = apply_affine(np.array([[0, 0], [640, 480]]), matrix)
    assert corners[0, 0] == pytest.approx(0) and corners[1, 0] == pytest.approx(256)  # width fills the crop
    assert 0 < corners[0, 1] < corners[1, 1] < 256  # height fits inside


@pytest.mark.parametrize("center, scale, size", [((100, 80), 1.3, (64, 64)), ((5.5, 300), 0.2, (48, 64)),
                                                 ((0, 0), 4.0, (256, 192))])
def test_affine_round_trip(center, scale, size):
    matrix = crop_matrix(center, scale, size)
    points = np.random.default_rng(0).uniform(-50, 500, size=(3, 7, 2))
    np.testing.assert_allclose(apply_affine(apply_affine(points, matrix), invert_affine(matrix)), points, atol=1e-9)
    np.testing.assert_allclose(apply_affine(np.asarray(center, float), matrix), np.array(size) / 2)


def test_nonpositive_scale_is_refused():
    with pytest.raises(InputError):
        crop_matrix((0, 0), 0.0, (64, 64))


# --- warping --------------------------------------------------------------------------------------

def test_identity_crop_returns_the_image_exactly():
    image = np.random.default_rng(2).integers(0, 256, size=(48, 40, 3), dtype=np.uint8)
    matrix = crop_matrix((20, 24), 48 / 200, (40, 48))
    np.testing.assert_array_equal(matrix[:, :2], np.eye(2))
    np.testing.assert_array_equal(crop(image, matrix, (40, 48)), image)


@pytest.mark.parametrize("zoom_scale, point", [(0.4, (70, 90)), (1.5, (120, 150)), (0.9, (20, 170)), (0.1, (83, 104))])
def test_crop_puts_a_pixel_where_the_matrix_says(zoom_scale, point):
    image = np.zeros((200, 160, 3), dtype=np.uint8)
    x, y = point
    image[y - 3:y + 4, x - 3:x + 4] = 255  # 7x7 block so downscaling cannot miss it
    matrix = crop_matrix((80, 100), zoom_scale, (64, 64))
    out = crop(image, matrix, (64, 64))[..., 0].astype(float)
    expected = apply_affine(np.array(point, float), matrix)
    ys, xs = np.nonzero(out)
    centroid = np.array([(xs * out[ys, xs]).sum(), (ys * out[ys, xs]).sum()]) / out[ys, xs].sum()
    np.testing.assert_allclose(centroid, expected, atol=0.5)


def test_outside_of_the_image_is_black():
    image = np.full((10, 10, 3), 200, dtype=np.uint8)
    out = crop(image, crop_matrix((5, 5), 1.0, (32, 32)), (32, 32))
    assert out[0, 0].tolist() == [0, 0, 0] and out[16, 16].tolist() == [200, 200, 200]


def test_normalize_follows_the_manifest_contract():
    crops = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    crops[..., 0], crops[..., 1], crops[..., 2] = 255, 0, 51
    spec = {"pixel_scale": 1 / 255, "mean": [0.5, 0.0, 0.1], "std": [0.5, 1.0, 0.2]}
    out = normalize(crops, spec)
    assert out.shape == (2, 3, 4, 5) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(out[:, 0], 1.0)
    np.testing.assert_allclose(out[:, 1], 0.0)
    np.testing.assert_allclose(out[:, 2], 0.5, atol=1e-6)


# --- loading --------------------------------------------------------------------------------------

def test_png_bytes_load_as_rgb_in_channel_order():
    red = np.zeros((6, 7, 3), dtype=np.uint8)
    red[..., 0] = 255
    loaded = load_image(_encode(red))
    assert loaded.shape == (6, 7, 3) and loaded.dtype == np.uint8
    assert loaded[0, 0].tolist() == [255, 0, 0]


def test_path_jpeg_grayscale_and_rgba_are_converted(tmp_path):
    gray = np.full((8, 9), 77, dtype=np.uint8)
    path = tmp_path / "g.jpg"
    Image.fromarray(gray).save(path)
    assert load_image(str(path)).shape == (8, 9, 3)
    rgba = np.zeros((5, 5, 4), dtype=np.uint8)
    rgba[..., 1] = 90
    assert load_image(_encode(rgba))[0, 0].tolist() == [0, 90, 0]
    assert load_image(path).shape == (8, 9, 3)  # pathlib too


def test_arrays_pass_through():
    image = np.zeros((3, 4, 3), dtype=np.uint8)
    assert load_image(image) is not None and load_image(image).shape == (3, 4, 3)


@pytest.mark.parametrize("bad", [
    np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32),
    np.zeros((0, 4, 3), np.uint8), b"", b"not an image at all", _encode(np.zeros((9, 9, 3), np.uint8))[:40],
    12345, "/nonexistent/image.png",
], ids=["2d", "4ch", "float", "empty-array", "empty-bytes", "garbage", "truncated", "int", "missing-path"])
def test_unusable_inputs_raise_input_error(bad):
    with pytest.raises(InputError):
        load_image(bad)


def test_pixel_limit_is_checked_before_decoding():
    big = _encode(np.zeros((100, 120, 3), np.uint8))
    assert load_image(big, max_pixels=12_000).shape == (100, 120, 3)
    with pytest.raises(InputError, match="above the limit"):
        load_image(big, max_pixels=11_999)
    with pytest.raises(InputError, match="above the limit"):
        load_image(np.zeros((100, 120, 3), np.uint8), max_pixels=100)


def test_decompression_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own guard, independent of ours
    with pytest.raises(InputError):
        load_image(_encode(np.zeros((40, 40, 3), np.uint8)))
