"""The pose task at run time: the Predictor (image in, keypoints out, on any backend), its
PoseResult, the result's COCO-style JSON and overlay, and the task's runtime record.

    from lbdeploy.runtime.predictor import Predictor
    predictor = Predictor("out/")                     # an exported artifact folder (or a model.pt)
    result = predictor.predict("person.jpg", boxes=[(x, y, w, h)], flip=True)
    result.keypoints  # [N, J, 2] (x, y) in original-image pixels; result.scores  # [N, J]

Without boxes, a person detector (runtime.detection; `detector="hog"` or an ONNX file) finds
them; without a detector the whole image is one person.

Pipeline per person: center/scale from the box (or the whole image), affine crop to the model
input, normalization from the manifest, one batched backend call for all people (and their
mirrored crops with flip=True), heatmap decoding, and the inverse affine back to image pixels.
An artifact folder is verified against its manifest's sha256 list before anything is loaded.

JSON follows the COCO keypoint results layout: one entry per person with `keypoints` as a flat
[x1, y1, s1, x2, y2, s2, ...] list (s = heatmap peak instead of COCO's visibility flag), plus the
joint names and skeleton so the file is self-describing. The server's endpoints are in
runtime/tasks/pose_routes.py (imported only by the server: FastAPI is the serve extra).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pathlib import Path

from PIL import Image, ImageDraw

from lbdeploy.artifact import final_output
from lbdeploy.errors import InputError
from lbdeploy.pose.affine import (BOX_PADDING, apply_affine, box_to_center_scale, crop_matrix, image_center_scale,
                                  invert_affine)
from lbdeploy.pose.decode import average_flip, decode_heatmaps, heatmap_to_input
from lbdeploy.tasks import get_task
from lbdeploy.transforms import DEFAULT_MAX_PIXELS, crop, load_image, normalize
from lbdeploy.runtime.deadline import check_deadline
from lbdeploy.runtime.detection import create_detector
from lbdeploy.runtime.loading import PredictorRecipe
from lbdeploy.runtime.tasks.base import RuntimeTask, TaskPredictor

# Joints whose score is at or below this are not drawn (a flat or negative heatmap).
DRAW_MIN_SCORE = 0.0
# The person's left and right in two colours and the body's axis in a third, as MMPose draws them
# (left green, right orange, centre blue); a joint's side comes from its name ("l_..." / "r_...").
SIDE_COLORS = {"left": (0, 255, 0), "right": (255, 128, 0), "centre": (51, 153, 255)}
_BOX_COLOR = (255, 255, 255)
# Marks scale with the person (box or keypoint extent): dot radius and line width = extent / this,
# the id label's height = extent / _LABEL_DIVISOR, within _LABEL_PX.
_MARK_DIVISOR = 60
_LABEL_DIVISOR = 8
_LABEL_PX = (8, 28)



@dataclass
class PoseResult:
    """Keypoints of the people in one image.

    Attributes:
        keypoints: [N, J, 2] float32 (x, y) in original-image pixels.
        scores: [N, J] float32 heatmap peak values (<= 0: joint not found).
        centers: [N, 2] crop centers; scales: [N] crop scales (box height / 200).
        image_size: (width, height) of the input image.
        heatmaps: [N, J, h, w] final heatmaps in the crop frame, when asked for.
        boxes: [N, 4] (x, y, w, h) person boxes (given or detected), None for whole-image/center_scale.
        box_scores: [N] detector scores (None when the boxes were not detected).
        track_ids: [N] person ids (runtime.tracking: stable across frames; else None).
    """

    keypoints: np.ndarray
    scores: np.ndarray
    centers: np.ndarray
    scales: np.ndarray
    image_size: tuple[int, int]
    heatmaps: np.ndarray | None = None
    boxes: np.ndarray | None = None
    box_scores: np.ndarray | None = None
    track_ids: np.ndarray | None = None


def _parse_center_scale(center_scale) -> list[tuple[np.ndarray, float]]:
    people = []
    for item in center_scale:
        try:
            (cx, cy), scale = item if len(item) == 2 else ((item[0], item[1]), item[2])
            people.append((np.array([float(cx), float(cy)]), float(scale)))
        except (TypeError, ValueError, IndexError) as err:
            raise InputError(f"center_scale entries are (cx, cy, scale) or ((cx, cy), scale), got {item!r}") from err
    return people


class Predictor(TaskPredictor):
    """Pose estimation on an exported artifact folder or a model.pt.

    Args:
        artifact_or_model_pt: artifact folder written by `lbdeploy export`, or a model.pt checkpoint.
        backend: "auto" (the artifact's own backend; "torch" for a model.pt) or a name of lbdeploy.backends.
        threads: intra-op threads for the backend (None: its default).
        max_pixels: images with more pixels are refused with InputError.
        detector: finds the people when `predict` gets no boxes: None or "none" (the whole image is
            one person), "hog", a path to an ONNX detector, or a runtime.detection.Detector.
        detector_options: score_threshold, nms_iou, max_people of a detector given by name or path.
        box_padding: person boxes are enlarged by this factor (after the aspect-ratio fit).
        **backend_opts: passed to the backend constructor.

    Raises:
        ArtifactError: a missing, unknown or modified artifact; ConfigError: a non-pose model or a wrong
        backend; BackendUnavailable / KernelLibraryError: the backend cannot run here.
    """

    task = get_task("pose")

    def __init__(self, artifact_or_model_pt, backend: str = "auto", threads: int | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, detector=None,
                 detector_options: dict | None = None, box_padding: float = BOX_PADDING, **backend_opts):
        super().__init__(artifact_or_model_pt, backend, threads, max_pixels, **backend_opts)
        pose = self.manifest["pose"]
        joints = int(final_output(self.manifest)["shape"][1])
        self.joint_names = list(pose.get("joints") or [f"joint_{i}" for i in range(joints)])
        self.flip_pairs = [tuple(pair) for pair in pose.get("flip_pairs", [])]
        self.skeleton = [tuple(edge) for edge in pose.get("skeleton", [])]
        self.heatmap_stride = int(pose.get("heatmap_stride", 4))
        self.box_padding = float(box_padding)
        self.detector = create_detector(detector, threads=threads, **(detector_options or {}))

    @property
    def max_people(self) -> int:
        """Most people one image yields without boxes: the detector's limit, else 1 (the whole image)."""
        return int(getattr(self.detector, "max_people", 1)) if self.detector is not None else 1

    @property
    def aspect_ratio(self) -> float:
        """Model input width / height."""
        return self.input_size[0] / self.input_size[1]

    def _people(self, image: np.ndarray, boxes, center_scale) -> list[tuple[np.ndarray, float]]:
        if boxes is not None and center_scale is not None:
            raise InputError("pass boxes or center_scale, not both")
        if center_scale is not None:
            people = _parse_center_scale(center_scale)
        elif boxes is not None:
            people = []
            for box in boxes:
                if len(box) != 4:
                    raise InputError(f"a box is (x, y, w, h), got {box!r}")
                people.append(box_to_center_scale(box, self.aspect_ratio, self.box_padding))
        else:
            people = [image_center_scale(image.shape[1], image.shape[0], self.aspect_ratio)]
        if not people:
            raise InputError("no person to estimate: boxes / center_scale is empty")
        return people

    def _crops(self, pixels: np.ndarray, matrices: list) -> list[np.ndarray]:
        """The model-input crop of each matrix; a server request past its deadline stops between crops."""
        source = Image.fromarray(pixels)  # converted once, not once per person
        crops = []
        for matrix in matrices:
            check_deadline()
            crops.append(crop(source, matrix, self.input_size))
        return crops

    def predict(self, image, boxes=None, center_scale=None, flip: bool = False,
                return_heatmaps: bool = False) -> PoseResult:
        """Estimate the pose of each person in an image.

        Args:
            image: a path, encoded bytes, or an HxWx3 uint8 RGB array.
            boxes: person boxes (x, y, w, h) in image pixels; each is padded by 1.25 and widened to
                the model's aspect ratio.
            center_scale: alternatively (cx, cy, scale) per person, scale = person height / 200.
            flip: also run the mirrored crops and average the heatmaps (the flip test).
            return_heatmaps: keep the final heatmaps (crop frame) in the result.

        Returns:
            PoseResult for all people. Without boxes the detector finds them (possibly nobody: N = 0);
            without a detector the whole image is one person.

        Raises:
            InputError: an unreadable or too large image, or malformed boxes.
        """
        pixels = load_image(image, self.max_pixels)
        box_scores = None
        if boxes is None and center_scale is None and self.detector is not None:
            boxes, box_scores = self.detector.detect(pixels)
            if not len(boxes):
                return self.nobody(pixels)
        people = self._people(pixels, boxes, center_scale)
        matrices = [crop_matrix(center, scale, self.input_size) for center, scale in people]
        batch = normalize(np.stack(self._crops(pixels, matrices)), self.manifest["input"])
        if flip:
            heatmaps = self.run_final(np.concatenate([batch, batch[..., ::-1]]))
            heatmaps = average_flip(heatmaps[:len(people)], heatmaps[len(people):], self.flip_pairs, self.heatmap_stride)
        else:
            heatmaps = self.run_final(batch)
        coords, scores = decode_heatmaps(heatmaps)
        input_xy = heatmap_to_input(coords, self.heatmap_stride)
        keypoints = np.stack([apply_affine(xy, invert_affine(m)) for xy, m in zip(input_xy, matrices)])
        return PoseResult(
            keypoints=keypoints.astype(np.float32),
            scores=scores,
            centers=np.array([center for center, _ in people], dtype=np.float32),
            scales=np.array([scale for _, scale in people], dtype=np.float32),
            image_size=(int(pixels.shape[1]), int(pixels.shape[0])),
            heatmaps=heatmaps if return_heatmaps else None,
            boxes=None if boxes is None else np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            box_scores=box_scores,
        )

    def nobody(self, pixels: np.ndarray) -> PoseResult:
        """The PoseResult of an HxWx3 image in which no person was found (N = 0)."""
        joints = len(self.joint_names)
        return PoseResult(keypoints=np.zeros((0, joints, 2), np.float32), scores=np.zeros((0, joints), np.float32),
                          centers=np.zeros((0, 2), np.float32), scales=np.zeros(0, np.float32),
                          image_size=(int(pixels.shape[1]), int(pixels.shape[0])),
                          boxes=np.zeros((0, 4), np.float32), box_scores=np.zeros(0, np.float32))


class PredictorFactory(PredictorRecipe):
    """A picklable recipe for a Predictor (servers call it once per process or Ray replica).

    Args: as Predictor.
    """

    predictor_class = Predictor


def pose_to_json(result, joint_names, skeleton=(), image_id=None) -> dict:
    """COCO-style dict for one image.

    Args:
        result: a PoseResult.
        joint_names: names of the J joints, in output order.
        skeleton: (a, b) joint index pairs.
        image_id: any identifier to echo back (e.g. the file name).

    Returns:
        {"image_id", "width", "height", "joints", "skeleton", "people": [{"category_id": 1,
        "keypoints": [x, y, s] * J, "score", "center", "scale", "id"}]}, plus "box" [x, y, w, h]
        when the person came from a box and "box_score" when a detector found it. "id" is the
        track id in a video (stable across frames), else the person's index in the image.
    """
    people = []
    for index, (keypoints, scores, center, scale) in enumerate(
            zip(result.keypoints, result.scores, result.centers, result.scales)):
        triples = np.concatenate([keypoints, scores[:, None]], axis=1)
        person = {
            "category_id": 1,
            "keypoints": [round(float(v), 3) for v in triples.ravel()],
            "score": round(float(np.mean(scores)), 5),
            "center": [round(float(v), 3) for v in center],
            "scale": round(float(scale), 5),
            "id": int(result.track_ids[index]) if result.track_ids is not None else index,
        }
        if result.boxes is not None:
            person["box"] = [round(float(v), 2) for v in result.boxes[index]]
        if result.box_scores is not None:
            person["box_score"] = round(float(result.box_scores[index]), 4)
        people.append(person)
    width, height = result.image_size
    return {"image_id": image_id, "width": width, "height": height, "joints": list(joint_names),
            "skeleton": [list(edge) for edge in skeleton], "people": people}


def joint_sides(joint_names) -> list[str]:
    """'left', 'right' or 'centre' per joint, from the names' l_ / r_ prefixes (MPII and LSP names)."""
    return ["left" if name.startswith("l_") else "right" if name.startswith("r_") else "centre"
            for name in joint_names]


def _person_extent(keypoints: np.ndarray, visible: np.ndarray, box) -> float:
    if box is not None:
        return float(max(box[2], box[3]))
    points = keypoints[visible] if visible.any() else keypoints
    return float(np.ptp(points, axis=0).max()) if len(points) else 0.0


def draw_pose(image: np.ndarray, result, skeleton, joint_names=(), min_score: float = DRAW_MIN_SCORE) -> Image.Image:
    """Overlay skeleton lines and joint dots on a copy of the image (and each person's box and id when known).

    Left and right limbs and joints get two colours and the body's axis a third (SIDE_COLORS); dots,
    lines and the id label scale with the person, so a small figure is not covered by its marks.

    Args:
        image: HxWx3 uint8 RGB array (the image that was predicted on).
        result: its PoseResult.
        skeleton: (a, b) joint index pairs to connect.
        joint_names: the joints' names, which tell their side (empty: everything in the centre colour).
        min_score: joints scoring at or below this are skipped.

    Returns:
        A Pillow RGB image.
    """
    from PIL import ImageFont

    canvas = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    joints = np.asarray(result.keypoints).shape[1] if np.asarray(result.keypoints).ndim == 3 else 0
    sides = joint_sides(joint_names) if len(joint_names) else ["centre"] * joints
    for index, (keypoints, scores) in enumerate(zip(result.keypoints, result.scores)):
        visible = scores > min_score
        box = result.boxes[index] if result.boxes is not None else None
        extent = _person_extent(keypoints, visible, box)
        size = max(1, round(extent / _MARK_DIVISOR))
        if box is not None:
            x, y, w, h = (float(v) for v in box)
            draw.rectangle([x, y, x + w, y + h], outline=_BOX_COLOR, width=max(1, size // 2))
            label = result.track_ids[index] if result.track_ids is not None else index
            font = ImageFont.load_default(size=int(np.clip(extent / _LABEL_DIVISOR, *_LABEL_PX)))
            draw.text((x + 2, y + 1), f"#{label}", fill=_BOX_COLOR, font=font, stroke_width=1, stroke_fill=(0, 0, 0))
        for a, b in skeleton:
            if visible[a] and visible[b]:
                side = sides[a] if sides[a] == sides[b] else "centre"
                draw.line([tuple(map(float, keypoints[a])), tuple(map(float, keypoints[b]))], fill=SIDE_COLORS[side],
                          width=size)
        for (x, y), seen, side in zip(keypoints, visible, sides):
            if seen:
                r = size
                draw.ellipse([x - r, y - r, x + r, y + r], fill=SIDE_COLORS[side], outline=(0, 0, 0))
    return canvas


class PoseRuntime(RuntimeTask):
    """The pose task's runtime record: the Predictor, COCO-style JSON, skeleton overlays, /v1/pose
    (runtime/tasks/pose_routes.py), PCK evaluation (lbdeploy.evaluation)."""

    task = get_task("pose")
    predictor_class = Predictor
    metric = "PCK"
    endpoints = ("/v1/pose", "/v1/pose/batch", "/v1/heatmaps")
    options = ("detector", "detector_options", "box_padding")
    infer_options = ("boxes", "camera", "detector", "score_threshold", "nms_iou", "max_people", "box_padding", "flip",
                     "detect_every", "smooth", "max_fps", "max_frames", "video")
    eval_options = ("flip", "threshold", "norm", "plot")

    def model_fields(self, predictor) -> dict:
        """The joint names, in keypoint order."""
        return {"joint_names": predictor.joint_names}

    def to_json(self, predictor, result, image_id=None) -> dict:
        """pose_to_json with the predictor's joint names and skeleton."""
        return pose_to_json(result, predictor.joint_names, predictor.skeleton, image_id=image_id)

    def document(self, predictor, images: list[dict]) -> dict:
        """{"model", "images"} (the layout `lbdeploy infer` has always printed for pose)."""
        return {"model": predictor.manifest.get("arch"), "images": images}

    def count(self, images: list[dict]) -> str:
        """How many people the images hold."""
        people = sum(len(image["people"]) for image in images)
        return "1 person" if people == 1 else f"{people} people"

    def notice(self, result, image: Path, detector: str) -> str | None:
        """Says when the detector found nobody."""
        if len(result.keypoints):
            return None
        return (f"No person found in {image} by the {detector} detector; pass --box, --detector none (the whole "
                "image) or another --detector")

    def drawings(self, pixels, result, predictor, draw: str, image: Path, folder: bool) -> list:
        """The skeleton overlay: at `draw`, or `<draw>/<image stem>.pose.png` in a folder."""
        target = Path(draw) / f"{image.stem}.pose.png" if folder else Path(draw)
        return [(target, draw_pose(pixels, result, predictor.skeleton, predictor.joint_names), "")]

    def add_routes(self, app, settings, dependencies: list) -> None:
        """POST /v1/pose, /v1/pose/batch and /v1/heatmaps."""
        from lbdeploy.runtime.tasks.pose_routes import add_pose_routes

        add_pose_routes(app, settings, dependencies)

    def seconds_per_item(self, predictor, dataset, flip: bool = False, **options) -> float:
        """Seconds one person takes (the estimate `lbdeploy eval` prints first)."""
        from lbdeploy.evaluation.evaluate import seconds_per_person

        return seconds_per_person(predictor, dataset, flip)

    def evaluate(self, predictor, dataset, limit, progress, flip: bool = False, threshold=None, norm=None, **options):
        """PCK (PCKh@0.5 on MPII and the synthetic set, PCK@0.2 on LSP unless threshold / norm say otherwise)."""
        from lbdeploy.evaluation.evaluate import evaluate, predict_with_predictor

        predictions = predict_with_predictor(predictor, dataset, flip=flip, limit=limit, progress=progress)
        return evaluate(dataset, predictions, threshold, norm)

    def format_reports(self, reports: dict) -> str:
        """The PCK table per joint group."""
        from lbdeploy.evaluation.pck import format_reports

        return format_reports(reports)


RUNTIME = PoseRuntime()
