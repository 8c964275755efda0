"""People first: person detectors that turn an image into the boxes the pose model crops.

    from lbdeploy.runtime.detection import create_detector
    detector = create_detector("hog")                  # or "person_det.onnx", or "none" -> None
    boxes, scores = detector.detect(rgb_image)         # [N, 4] (x, y, w, h), [N]

Two detectors:

- `hog`: OpenCV's built-in HOG + linear SVM people detector (Dalal and Triggs), shipped inside
  opencv-python-headless, offline, no weights to fetch. Trained on upright pedestrians in real
  photographs, at least 64x128 pixels; it misses sitting, lying or small people, and drawings.
  Its scores are SVM margins (not probabilities), so its default threshold differs.
- `PATH.onnx`: your own detector in the layout of detectors exported by MMDeploy: one image input
  [1, 3, H, W] and outputs `dets` [N, 5] (x1, y1, x2, y2, score, in network-input pixels) and
  `labels` [N] (class index; `person_label`, default 0 as in COCO, is kept). A leading batch
  axis of 1 is accepted. A fixed H, W means the image is resized keeping its aspect ratio
  (padded right and bottom); a dynamic H, W gets the image as it is. Pixel preprocessing
  defaults to MMDetection's (RGB, mean 123.675/116.28/103.53, std 58.395/57.12/57.375 on 0..255);
  a JSON file next to the model (`PATH.json`: "mean", "std", "color", "input_size",
  "person_label") overrides it. The graph is checked when it is loaded.

Every detector's raw boxes then go through `select_people`: score threshold, non-maximum
suppression and the `max_people` highest scores. The Predictor pads each box to the pose
model's aspect ratio (lbdeploy.pose.affine.box_to_center_scale).

To add a detector, subclass `Detector` (implement `raw_boxes`) and register a factory in
DETECTORS under its name.
"""

from __future__ import annotations

import abc
import json
import os
from pathlib import Path

import numpy as np

from lbdeploy.errors import BackendUnavailable, ConfigError
from lbdeploy.transforms import DEFAULT_MAX_PIXELS, check_image_size
from lbdeploy.runtime.deadline import check_deadline

DEFAULT_NMS_IOU = 0.45
DEFAULT_MAX_PEOPLE = 20
# Default MMDetection preprocessing (RGB, 0..255 pixels).
MMDET_MEAN = (123.675, 116.28, 103.53)
MMDET_STD = (58.395, 57.12, 57.375)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of `a` [N, 4] with every box of `b` [M, 4], (x, y, w, h)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, :2] + a[:, None, 2:], b[None, :, :2] + b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0.0, None), axis=2)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, best score first.

    A box is dropped when it overlaps an already kept, higher-scoring box by more than `iou`.
    (Written in numpy so an ONNX-only board needs no OpenCV or torchvision for it.)
    """
    order = list(np.argsort(-np.asarray(scores), kind="stable"))
    overlaps = box_iou(boxes, boxes)
    kept = []
    while order:
        best = order.pop(0)
        kept.append(best)
        order = [i for i in order if overlaps[best, i] <= iou]
    return np.array(kept, dtype=np.int64)


def select_people(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, nms_iou: float = DEFAULT_NMS_IOU,
                  max_people: int = DEFAULT_MAX_PEOPLE) -> tuple[np.ndarray, np.ndarray]:
    """Threshold, NMS and top-`max_people` of raw detections.

    Args:
        boxes: [N, 4] (x, y, w, h); scores: [N].
        score_threshold: boxes scoring below it are dropped.
        nms_iou: overlap above which the lower-scoring of two boxes is dropped.
        max_people: keep at most this many (highest scores).

    Returns:
        (boxes [K, 4] float32, scores [K] float32), best score first; boxes of zero size are dropped.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    valid = (scores >= score_threshold) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & np.isfinite(boxes).all(axis=1)
    boxes, scores = boxes[valid], scores[valid]
    keep = non_max_suppression(boxes, scores, nms_iou)[:max_people]
    return boxes[keep], scores[keep]


class Detector(abc.ABC):
    """A person detector: `detect(image)` -> the selected boxes and scores.

    Args:
        score_threshold: detections scoring below are dropped (None: the detector's default).
        nms_iou: NMS overlap threshold.
        max_people: most people kept per image.
    """

    name = "detector"
    default_score_threshold = 0.5

    def __init__(self, score_threshold: float | None = None, nms_iou: float = DEFAULT_NMS_IOU,
                 max_people: int = DEFAULT_MAX_PEOPLE):
        self.score_threshold = self.default_score_threshold if score_threshold is None else float(score_threshold)
        self.nms_iou, self.max_people = float(nms_iou), int(max_people)

    @abc.abstractmethod
    def raw_boxes(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All candidate person boxes [N, 4] (x, y, w, h) and scores [N] of an HxWx3 uint8 RGB image."""

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The people in an HxWx3 uint8 RGB image: (boxes [K, 4] (x, y, w, h) float32, scores [K] float32)."""
        boxes, scores = self.raw_boxes(image)
        return select_people(boxes, scores, self.score_threshold, self.nms_iou, self.max_people)


class HogDetector(Detector):
    """OpenCV's HOG + linear SVM pedestrian detector (needs opencv-python-headless < 5).

    Raises:
        BackendUnavailable: OpenCV is missing or has no HOG people detector (OpenCV 5 moved it out).
    """

    name = "hog"
    default_score_threshold = 0.3
    WIN_STRIDE, PADDING, PYRAMID_SCALE = (8, 8), (8, 8), 1.05
    # detectMultiScale's grouping (cv2.groupRectangles): clusters of more than 2 similar windows.
    GROUP_THRESHOLD, GROUP_EPS = 2, 0.2
    GROUP_MEMBER_IOU = 0.5  # a window this close to a grouped box lends it its score

    def __init__(self, **params):
        super().__init__(**params)
        try:
            import cv2
        except ImportError as err:
            raise BackendUnavailable("the hog detector needs OpenCV: pip install 'lbdeploy[video]', "
                                     "or pass --detector none or --detector PATH.onnx") from err
        if not hasattr(cv2, "HOGDescriptor"):
            raise BackendUnavailable(f"OpenCV {cv2.__version__} has no HOG people detector; "
                                     "pip install 'opencv-python-headless<5'")
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def raw_boxes(self, image):
        """HOG windows over an image pyramid, grouped as OpenCV's detectMultiScale groups them (NMS
        follows in `detect`).

        The pyramid is walked level by level (as detectMultiScale walks it: each level the image
        shrunk by PYRAMID_SCALE, down to the window size) with `check_deadline` between levels, so
        a server request stopped at its deadline stops here too. An image smaller than the 64x128
        window is enlarged to hold one first (OpenCV's HOG crashes on smaller images); the enlarged
        image is held to the same size bounds as decoded images (lbdeploy.transforms.check_image_size).
        Each grouped box scores the best SVM margin among the windows it groups.
        """
        import cv2

        height, width = image.shape[:2]
        win_w, win_h = self._hog.winSize
        zoom = max(win_h / height, win_w / width, 1.0)
        bgr = np.ascontiguousarray(image[..., ::-1])
        if zoom > 1.0:
            size = (int(np.ceil(width * zoom)), int(np.ceil(height * zoom)))
            check_image_size(*size, DEFAULT_MAX_PIXELS, "the image enlarged to the HOG window")
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR)
        windows, weights = self._pyramid_windows(bgr)
        if not windows:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        grouped, _ = cv2.groupRectangles(windows, self.GROUP_THRESHOLD, self.GROUP_EPS)
        grouped = np.asarray(grouped, dtype=np.float32).reshape(-1, 4)
        overlaps = box_iou(grouped, np.asarray(windows, dtype=np.float32))
        scores = np.where(overlaps >= self.GROUP_MEMBER_IOU, np.asarray(weights)[None, :], -np.inf).max(axis=1)
        return grouped / zoom, scores.astype(np.float32)

    def _pyramid_windows(self, bgr: np.ndarray) -> tuple[list, list]:
        """Every window scoring above 0 at every pyramid level, in the image's pixels, and its SVM margin."""
        import cv2

        height, width = bgr.shape[:2]
        win_w, win_h = self._hog.winSize
        windows, weights, scale = [], [], 1.0
        for _ in range(self._hog.nlevels):
            level_w, level_h = round(width / scale), round(height / scale)
            if level_w < win_w or level_h < win_h:
                break
            check_deadline()
            level = bgr if scale == 1.0 else cv2.resize(bgr, (level_w, level_h), interpolation=cv2.INTER_LINEAR_EXACT)
            found, margins = self._hog.detect(level, hitThreshold=0.0, winStride=self.WIN_STRIDE, padding=self.PADDING)
            for (x, y), margin in zip(np.asarray(found).reshape(-1, 2), np.asarray(margins).reshape(-1)):
                windows.append([round(x * scale), round(y * scale), round(win_w * scale), round(win_h * scale)])
                weights.append(float(margin))
            scale *= self.PYRAMID_SCALE
        return windows, weights


class OnnxDetector(Detector):
    """A user's ONNX person detector with MMDeploy's `dets` + `labels` outputs (see the module docstring).

    Args:
        path: the .onnx file; an optional PATH.json beside it sets the preprocessing.
        threads: ONNX Runtime intra-op threads.
        **params: score_threshold, nms_iou, max_people.

    Raises:
        ConfigError: a missing or unreadable file, or a graph without the expected input and outputs.
    """

    name = "onnx"
    default_score_threshold = 0.3

    def __init__(self, path, threads: int | None = None, **params):
        super().__init__(**params)
        import onnxruntime as ort

        from lbdeploy.runtime.backends.ort import session_options

        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"detector {self.path} does not exist; pass a .onnx file, 'hog' or 'none'")
        settings = self._settings()
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own exception types for unreadable or invalid graphs
            reason = str(err).splitlines()[0]
            raise ConfigError(f"detector {self.path} is not a loadable ONNX model ({reason})") from err
        self._check_graph()
        self.mean = np.asarray(settings.get("mean", MMDET_MEAN), dtype=np.float32)
        self.std = np.asarray(settings.get("std", MMDET_STD), dtype=np.float32)
        self.bgr = str(settings.get("color", "RGB")).upper() == "BGR"
        self.person_label = int(settings.get("person_label", 0))
        size = settings.get("input_size") or self._fixed_size
        self.input_size = tuple(int(v) for v in size) if size else None

    def _settings(self) -> dict:
        sidecar = self.path.with_suffix(".json")
        if not sidecar.is_file():
            return {}
        try:
            settings = json.loads(sidecar.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"detector settings {sidecar} are not valid JSON ({err})") from err
        if not isinstance(settings, dict):
            raise ConfigError(f"detector settings {sidecar} must be a JSON object")
        return settings

    def _check_graph(self) -> None:
        inputs = self.session.get_inputs()
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        expected = "one image input [1, 3, H, W] and outputs dets [N, 5] (x1, y1, x2, y2, score) + labels [N]"
        shape = inputs[0].shape if len(inputs) == 1 else None
        problem = None
        if shape is None or len(shape) != 4 or shape[1] not in (3, "3"):
            problem = f"inputs {[(i.name, i.shape) for i in inputs]}"
        elif "dets" not in outputs or "labels" not in outputs:
            problem = f"outputs {sorted(outputs)}"
        elif len(outputs["dets"]) not in (2, 3) or isinstance(outputs["dets"][-1], int) and outputs["dets"][-1] != 5:
            problem = f"dets of shape {outputs['dets']}"
        if problem:
            raise ConfigError(f"detector {self.path} has {problem}; expected {expected}, as MMDeploy exports detectors")
        self.input_name = inputs[0].name
        height, width = shape[2], shape[3]
        self._fixed_size = (width, height) if isinstance(width, int) and isinstance(height, int) else None

    def raw_boxes(self, image):
        """Run the graph on the (resized) image; boxes are mapped back to image pixels."""
        from PIL import Image

        height, width = image.shape[:2]
        zoom = 1.0
        pixels = image
        if self.input_size:
            in_w, in_h = self.input_size
            zoom = min(in_w / width, in_h / height)
            resized = Image.fromarray(image).resize((max(1, round(width * zoom)), max(1, round(height * zoom))),
                                                    Image.Resampling.BILINEAR)
            pixels = np.zeros((in_h, in_w, 3), dtype=np.uint8)
            pixels[:resized.height, :resized.width] = np.asarray(resized)
        data = pixels[..., ::-1] if self.bgr else pixels
        tensor = ((data.astype(np.float32) - self.mean) / self.std).transpose(2, 0, 1)[None]
        dets, labels = self.session.run(["dets", "labels"], {self.input_name: np.ascontiguousarray(tensor)})
        dets, labels = np.asarray(dets).reshape(-1, 5), np.asarray(labels).reshape(-1)
        if len(dets) != len(labels):
            raise ConfigError(f"detector {self.path} returned {len(dets)} dets but {len(labels)} labels")
        dets = dets[labels == self.person_label]
        corners = dets[:, :4] / zoom
        boxes = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
        return boxes, dets[:, 4]


DETECTORS = {"hog": HogDetector}
NO_DETECTOR = "none"


def create_detector(spec, threads: int | None = None, **params) -> Detector | None:
    """The detector named by `spec`.

    Args:
        spec: "hog", "none" (None: the whole image is one person) or a path to an .onnx detector;
            a Detector instance or None is returned as it is.
        threads: ONNX Runtime threads of an ONNX detector.
        **params: score_threshold, nms_iou, max_people.

    Raises:
        ConfigError: an unknown name or an invalid ONNX detector; BackendUnavailable: OpenCV missing for hog.
    """
    if spec is None or isinstance(spec, Detector):
        return spec
    text = os.fspath(spec)
    if text == NO_DETECTOR:
        return None
    if text in DETECTORS:
        return DETECTORS[text](**params)
    if text.endswith(".onnx") or Path(text).is_file():
        return OnnxDetector(text, threads=threads, **params)
    raise ConfigError(f"unknown detector {text!r}; use {', '.join(DETECTORS)}, {NO_DETECTOR} or a PATH.onnx")
