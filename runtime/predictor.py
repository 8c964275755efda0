"""The Predictor: image in, keypoints out, on any backend.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from lbdeploy.artifact import final_output
from lbdeploy.errors import ConfigError, InputError
from lbdeploy.pose.affine import (BOX_PADDING, apply_affine, box_to_center_scale, crop_matrix, image_center_scale,
                                  invert_affine)
from lbdeploy.pose.decode import average_flip, decode_heatmaps, heatmap_to_input
from lbdeploy.transforms import DEFAULT_MAX_PIXELS, crop, load_image, normalize
from lbdeploy.runtime.deadline import check_deadline
from lbdeploy.runtime.detection import create_detector
from lbdeploy.runtime.loading import PredictorRecipe, load_model_source


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


class Predictor:
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

    def __init__(self, artifact_or_model_pt, backend: str = "auto", threads: int | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, detector=None,
                 detector_options: dict | None = None, box_padding: float = BOX_PADDING, **backend_opts):
        source, self.manifest, self.backend = load_model_source(artifact_or_model_pt, backend, threads, **backend_opts)
        if self.manifest.get("task") != "pose" or "pose" not in self.manifest:
            raise ConfigError(f"{source} is a {self.manifest.get('task')!r} model; the Predictor runs pose models "
                              "(runtime.saliency.SaliencyPredictor runs saliency models)")
        self.source = source
        self.max_pixels = int(max_pixels)
        spec = self.manifest["input"]
        self.input_name = spec["name"]
        batch, _, height, width = spec["shape"]
        self.input_size = (int(width), int(height))
        self.max_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.output_name = final_output(self.manifest)["name"]
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

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        step = self.max_batch or len(batch)
        chunks = [self.backend.run({self.input_name: batch[i:i + step]})[self.output_name]
                  for i in range(0, len(batch), step)]
        return np.concatenate(chunks).astype(np.float32, copy=False)

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
            heatmaps = self._infer(np.concatenate([batch, batch[..., ::-1]]))
            heatmaps = average_flip(heatmaps[:len(people)], heatmaps[len(people):], self.flip_pairs, self.heatmap_stride)
        else:
            heatmaps = self._infer(batch)
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
