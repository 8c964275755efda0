"""People first: detector post-processing, OpenCV's HOG detector, ONNX detectors in MMDeploy's
layout (validated on load), and the demo pose model on multi-person synthetic scenes with and
without a detector, through the Predictor and `lbdeploy infer`."""

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from lbdeploy.data.scenes import BACKGROUND, make_scene
from lbdeploy.errors import ConfigError
from lbdeploy.runtime.detection import HogDetector, OnnxDetector, box_iou, create_detector, select_people
from runtime_artifacts import dot_image, pool_manifest, pool_model, write_artifact

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
onnx = pytest.importorskip("onnx", reason="building test detectors needs onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lbdeploy.runtime.predictor import Predictor  # noqa: E402
from lbdeploy.runtime.tasks.pose import pose_to_json  # noqa: E402

# A joint is right when it is within this fraction of the person's larger box side of the truth.
PCK_FRACTION = 0.2


def _pck(result, scene) -> float:
    """Fraction of the scene's joints within PCK_FRACTION of the truth; each truth person is scored
    against its closest predicted pose, a person with no pose at all scores 0."""
    hits = []
    for truth, box in zip(scene.joints, scene.boxes):
        if not len(result.keypoints):
            hits.append(np.zeros(len(truth)))
            continue
        errors = min((np.linalg.norm(pose - truth, axis=1) for pose in result.keypoints), key=np.mean)
        hits.append(errors <= PCK_FRACTION * max(box[2:]))
    return float(np.mean(hits))


# --- post-processing --------------------------------------------------------------------------------

def test_box_iou_values():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]])
    iou = box_iou(boxes, boxes)
    np.testing.assert_allclose(np.diag(iou), 1.0)
    assert iou[0, 1] == pytest.approx(50 / 150) and iou[0, 2] == 0.0


def test_threshold_nms_and_max_people():
    boxes = [[0, 0, 10, 20], [1, 1, 10, 20], [50, 0, 10, 20], [100, 0, 10, 20], [0, 0, 0, 5]]
    scores = [0.9, 0.8, 0.7, 0.2, 0.95]
    kept, kept_scores = select_people(boxes, scores, score_threshold=0.3, nms_iou=0.5)
    # the overlapping 0.8 box is suppressed, 0.2 is under the threshold, the empty box is dropped
    np.testing.assert_allclose(kept_scores, [0.9, 0.7])
    np.testing.assert_allclose(kept, [[0, 0, 10, 20], [50, 0, 10, 20]])
    assert len(select_people(boxes, scores, 0.3, nms_iou=0.9)[0]) == 3  # looser NMS keeps the overlap
    assert len(select_people(boxes, scores, 0.0, max_people=1)[0]) == 1


# --- OpenCV's HOG detector --------------------------------------------------------------------------

def _pedestrians() -> tuple[np.ndarray, list]:
    """Two upright, dark, blurred walker silhouettes on a light wall: the kind of picture HOG was made for."""
    image = Image.new("RGB", (320, 240), (200, 200, 190))
    draw = ImageDraw.Draw(image)
    truth = []
    for cx, top, height in ((80, 40, 150), (230, 60, 130)):
        u, colour = height / 8, (40, 40, 50)
        draw.ellipse((cx - 0.45 * u, top, cx + 0.45 * u, top + u), fill=colour)
        draw.polygon([(cx - 0.9 * u, top + 1.2 * u), (cx + 0.9 * u, top + 1.2 * u),
                      (cx + 0.7 * u, top + 4.2 * u), (cx - 0.7 * u, top + 4.2 * u)], fill=colour)
        for x0, x1, y0, width in ((-0.9, -1.1, 1.3, 0.35), (0.9, 1.1, 1.3, 0.35), (-0.4, -0.7, 4.1, 0.5),
                                  (0.4, 0.6, 4.1, 0.5)):
            draw.line([(cx + x0 * u, top + y0 * u), (cx + x1 * u, top + (8 if y0 > 4 else 4) * u)],
                      fill=colour, width=int(width * u))
        truth.append((cx - 1.2 * u, top, 2.4 * u, height))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(1.0))), truth


def test_hog_finds_upright_pedestrians():
    pytest.importorskip("cv2", reason="the hog detector needs opencv-python-headless")
    image, truth = _pedestrians()
    boxes, scores = HogDetector().detect(image)
    assert len(boxes) == 2 and np.all(scores > 1.0)
    # HOG's 64x128 window holds the person with a margin, so its box is larger than the silhouette
    assert np.all(box_iou(truth, boxes).max(axis=1) > 0.3)
    assert box_iou(truth, boxes).argmax(axis=1).tolist() == [0, 1]


@pytest.mark.parametrize("shape", [(64, 64), (10, 10), (64, 100), (300, 40)])
def test_hog_handles_images_smaller_than_its_window(shape):
    pytest.importorskip("cv2", reason="the hog detector needs opencv-python-headless")
    boxes, scores = HogDetector().detect(np.zeros((*shape, 3), np.uint8))  # OpenCV alone segfaults on these
    assert boxes.shape == (0, 4) and scores.shape == (0,)


# --- ONNX detectors ---------------------------------------------------------------------------------

def _constant_detector(path, input_shape, dets, labels):
    """An ONNX graph in MMDeploy's layout that returns fixed detections (0 * the image keeps the input used)."""
    nodes = [helper.make_node("ReduceMax", ["image"], ["peak"], keepdims=0),
             helper.make_node("Mul", ["peak", "zero"], ["nothing"]),
             helper.make_node("Add", ["fixed", "nothing"], ["dets"]),
             helper.make_node("Identity", ["fixed_labels"], ["labels"])]
    graph = helper.make_graph(
        nodes, "constant_detector", [helper.make_tensor_value_info("image", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, len(dets), 5]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [1, len(dets)])],
        initializer=[numpy_helper.from_array(np.array([dets], np.float32), "fixed"),
                     numpy_helper.from_array(np.array([labels], np.int64), "fixed_labels"),
                     numpy_helper.from_array(np.array(0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    path.write_bytes(model.SerializeToString())
    return path


def test_fixed_size_detector_boxes_come_back_in_image_pixels(tmp_path):
    path = _constant_detector(tmp_path / "det.onnx", [1, 3, 64, 64],
                              dets=[[8, 8, 24, 40, 0.9], [30, 30, 40, 40, 0.8], [0, 0, 4, 4, 0.1]], labels=[0, 2, 0])
    detector = create_detector(str(path))
    assert isinstance(detector, OnnxDetector) and detector.input_size == (64, 64)
    boxes, scores = detector.detect(np.zeros((256, 128, 3), np.uint8))
    # 128x256 -> 64x64 letterbox: zoom 0.25; the label-2 box is not a person; 0.1 is under the threshold
    np.testing.assert_allclose(boxes, [[32, 32, 64, 128]])
    np.testing.assert_allclose(scores, [0.9])


def test_wrong_detectors_are_refused_with_one_line(tmp_path, scene_detector):
    not_a_detector = tmp_path / "pose.onnx"
    not_a_detector.write_bytes(pool_model().SerializeToString())
    with pytest.raises(ConfigError, match=r"has outputs \['heatmaps_0', 'heatmaps_1'\]; expected .*dets"):
        create_detector(str(not_a_detector))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf")
    with pytest.raises(ConfigError, match="not a loadable ONNX model"):
        create_detector(str(garbage))
    with pytest.raises(ConfigError, match="does not exist"):
        create_detector(str(tmp_path / "missing.onnx"))
    with pytest.raises(ConfigError, match="unknown detector 'yolo'"):
        create_detector("yolo")
    (scene_detector.parent / "broken.json").write_text("{")
    broken = scene_detector.parent / "broken.onnx"
    broken.write_bytes(scene_detector.read_bytes())
    with pytest.raises(ConfigError, match="not valid JSON"):
        create_detector(str(broken))
    assert create_detector("none") is None


def test_infer_with_a_wrong_detector_exits_2(tmp_path):
    from click.testing import CliRunner

    from lbdeploy.cli import main

    artifact = write_artifact(tmp_path / "a", pool_model(), pool_manifest())
    image = tmp_path / "img.png"
    Image.fromarray(dot_image(64, 64, {})).save(image)
    result = CliRunner().invoke(main, ["infer", str(artifact), str(image), "--detector", str(artifact / "model.onnx")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "expected one image input" in result.output


def test_scene_detector_finds_every_synthetic_person(scene_detector):
    detector = create_detector(str(scene_detector))
    for seed in range(6):
        scene = make_scene(seed, people=3)
        boxes, _ = detector.detect(scene.image)
        assert len(boxes) == 3
        iou = box_iou(scene.boxes, boxes)
        assert iou.argmax(axis=1).tolist() == [0, 1, 2] and iou.max(axis=1).min() > 0.7


def test_scenes_place_people_off_centre_in_their_bands():
    scene = make_scene(4, width=384, height=256, people=3)
    assert scene.image.shape == (256, 384, 3) and scene.joints.shape == (3, 16, 2)
    for k, (x, y, w, h) in enumerate(scene.boxes):
        assert 128 * k <= x and x + w <= 128 * (k + 1) and 0 <= y and y + h <= 256
    np.testing.assert_array_equal(make_scene(4).image, scene.image)  # deterministic
    single = make_scene(1, people=1)
    center = single.boxes[0, :2] + single.boxes[0, 2:] / 2
    assert np.abs(center - (192, 128)).max() > 20


# --- the demo pose model, people first ---------------------------------------------------------------

@pytest.fixture(scope="module")
def predictors(demo_artifact, scene_detector):
    return (Predictor(demo_artifact, threads=1, detector=str(scene_detector)),
            Predictor(demo_artifact, threads=1, detector="none"))


@pytest.mark.parametrize("people, with_detector, without_detector", [(3, 0.8, 0.2), (1, 0.8, 0.75)])
def test_keypoints_are_right_with_the_detector_and_wrong_without(predictors, people, with_detector,
                                                                 without_detector):
    detected, whole_image = predictors
    scenes = [make_scene(seed, people=people) for seed in range(6)]
    found = np.mean([_pck(detected.predict(s.image), s) for s in scenes])
    whole = np.mean([_pck(whole_image.predict(s.image), s) for s in scenes])
    assert found >= with_detector, found
    assert whole <= without_detector and found - whole >= 0.2, (found, whole)


def test_predictor_reports_boxes_and_nobody(predictors):
    detected, _ = predictors
    scene = make_scene(2, people=3)
    result = detected.predict(scene.image)
    assert result.keypoints.shape == (3, 16, 2) and result.boxes.shape == (3, 4) and result.box_scores.shape == (3,)
    document = pose_to_json(result, detected.joint_names, detected.skeleton)
    assert [p["id"] for p in document["people"]] == [0, 1, 2]
    np.testing.assert_allclose([p["box"] for p in document["people"]], result.boxes, atol=0.01)
    empty = detected.predict(np.full((100, 120, 3), BACKGROUND, np.uint8))
    assert empty.keypoints.shape == (0, 16, 2) and empty.image_size == (120, 100)
    assert pose_to_json(empty, detected.joint_names)["people"] == []


def test_infer_finds_every_person_and_draws_them(demo_artifact, scene_detector, tmp_path):
    from click.testing import CliRunner

    from lbdeploy.cli import main

    scene = make_scene(5, people=3)
    image, out_json, out_png = tmp_path / "scene.png", tmp_path / "pose.json", tmp_path / "pose.png"
    Image.fromarray(scene.image).save(image)
    result = CliRunner().invoke(main, ["infer", str(demo_artifact), str(image), "--detector", str(scene_detector),
                                       "--json", str(out_json), "--draw", str(out_png), "--threads", "1"])
    assert result.exit_code == 0, result.output
    people = json.loads(out_json.read_text())["images"][0]["people"]
    assert len(people) == 3 and sorted(p["id"] for p in people) == [0, 1, 2]
    assert box_iou(scene.boxes, [p["box"] for p in people]).max(axis=1).min() > 0.6
    drawn = np.asarray(Image.open(out_png)).astype(int)
    for x, y, w, h in scene.boxes.astype(int):  # each person got a skeleton drawn over them
        assert np.abs(drawn[y:y + h, x:x + w] - scene.image[y:y + h, x:x + w]).sum() > 0

    missed = CliRunner().invoke(main, ["infer", str(demo_artifact), str(image), "--threads", "1"])
    assert missed.exit_code == 0 and "No person found" in missed.output and "by the hog detector" in missed.output
