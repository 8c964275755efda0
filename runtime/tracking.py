"""Pose tracking across video frames: detect now and then, crop from the last keypoints in between.

    from lbdeploy.runtime.tracking import PoseTracker
    tracker = PoseTracker(predictor, detect_every=10, smoothing=True)
    for time_s, frame in frames:
        result = tracker.update(frame, time_s)    # a PoseResult with result.track_ids

Per frame: when the detector is due (every `detect_every` frames, when there are no tracks, or
when a track was lost on the previous frame) the detector's boxes are matched to the tracks by
box overlap (greedy, highest IoU first, at least `match_iou`); matched boxes keep their track's
id, the others start new tracks, unmatched tracks end. Between detections the detector does not
run: each track's box keeps the size of its last detection and follows the median of its confident
joints from the previous frame (at the offset box centre - joint median measured on the frame of
that detection). Deriving the size from the joints too was tried and collapses: a crop that cuts
off a limb yields a smaller joint box, a tighter crop next frame, and so on; size changes are
picked up by the next detection. A track whose mean joint score falls below `lost_score`, or that
has fewer than `MIN_JOINTS` confident joints, is lost: it is left out of the frame's result and
forces a detection on the next frame, where a matching box revives it (same id) or it ends.

Without a detector on the Predictor the whole frame is one track (id 0). Optional One-Euro
smoothing (Casiez et al., CHI 2012) filters each track's keypoints over time.

To change the association (e.g. keypoint similarity instead of IoU), replace `match_boxes`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from lbdeploy.runtime.detection import box_iou

DEFAULT_DETECT_EVERY = 10
DEFAULT_MATCH_IOU = 0.3
DEFAULT_LOST_SCORE = 0.05
# A joint counts toward a track's box when its heatmap peak is above this.
JOINT_SCORE = 0.05
MIN_JOINTS = 4


def _people_subset(result, keep: np.ndarray):
    """The PoseResult with only the people where `keep` is True."""
    fields = ("keypoints", "scores", "centers", "scales", "heatmaps", "boxes", "box_scores")
    present = [name for name in fields if getattr(result, name) is not None]
    return replace(result, **{name: getattr(result, name)[keep] for name in present})


class OneEuroFilter:
    """One-Euro low-pass filter of an array signal: smooth when slow, responsive when fast.

    Args:
        min_cutoff: cutoff frequency (Hz) at rest; lower smooths more.
        beta: how fast the cutoff grows with speed; higher lags less on fast motion.
        d_cutoff: cutoff of the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self._value = self._speed = self._time = None

    @staticmethod
    def _alpha(cutoff, dt: float):
        tau = 1.0 / (2.0 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, value: np.ndarray, time_s: float) -> np.ndarray:
        """The filtered `value` at `time_s` (seconds; must increase between calls)."""
        value = np.asarray(value, dtype=np.float64)
        if self._value is None or time_s <= self._time:
            self._value, self._speed, self._time = value, np.zeros_like(value), time_s
            return value
        dt = time_s - self._time
        speed = (value - self._value) / dt
        self._speed = self._speed + self._alpha(self.d_cutoff, dt) * (speed - self._speed)
        cutoff = self.min_cutoff + self.beta * np.abs(self._speed)
        self._value = self._value + self._alpha(cutoff, dt) * (value - self._value)
        self._time = time_s
        return self._value


def keypoint_center(keypoints: np.ndarray, scores: np.ndarray, min_score: float = JOINT_SCORE) -> np.ndarray | None:
    """Median (x, y) of the joints scoring above `min_score`; None with fewer than MIN_JOINTS such joints."""
    confident = keypoints[scores > min_score]
    if len(confident) < MIN_JOINTS:
        return None
    return np.median(confident, axis=0)


def match_boxes(tracks: np.ndarray, detections: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Greedy (track index, detection index) pairs, highest IoU first, each IoU >= `min_iou`."""
    overlaps = box_iou(tracks, detections)
    pairs, used_t, used_d = [], set(), set()
    for flat in np.argsort(-overlaps, axis=None, kind="stable"):
        t, d = np.unravel_index(flat, overlaps.shape)
        if overlaps[t, d] < min_iou:
            break
        if t not in used_t and d not in used_d:
            pairs.append((int(t), int(d)))
            used_t.add(t)
            used_d.add(d)
    return pairs


@dataclass
class _Track:
    id: int
    box: np.ndarray
    smoother: OneEuroFilter | None = None
    lost: bool = False
    offset: np.ndarray | None = None  # box centre - joint median, measured when the box was detected


class PoseTracker:
    """Stable person ids and cheap crops across the frames of one video.

    Args:
        predictor: a runtime.predictor.Predictor (its detector finds the people).
        detect_every: run the detector every N frames (1: every frame); it also runs when a track
            was lost or there is none.
        match_iou: least box overlap for a detection to continue a track.
        lost_score: a track whose mean joint score is below this ends.
        smoothing: One-Euro filter the keypoints (True, or a dict of OneEuroFilter arguments).
        flip: the Predictor's flip test.
    """

    def __init__(self, predictor, detect_every: int = DEFAULT_DETECT_EVERY, match_iou: float = DEFAULT_MATCH_IOU,
                 lost_score: float = DEFAULT_LOST_SCORE, smoothing=False, flip: bool = False):
        self.predictor = predictor
        self.detect_every = max(1, int(detect_every))
        self.match_iou, self.lost_score, self.flip = float(match_iou), float(lost_score), bool(flip)
        self.smoothing = {} if smoothing is True else (dict(smoothing) if smoothing else None)
        self.tracks: list[_Track] = []
        self.frames = self.detections = 0
        self._next_id = 0
        self._redetect = True

    def _new_track(self, box) -> _Track:
        track = _Track(self._next_id, np.asarray(box, dtype=np.float32),
                       OneEuroFilter(**self.smoothing) if self.smoothing is not None else None)
        self._next_id += 1
        return track

    def _associate(self, frame: np.ndarray) -> None:
        boxes, _ = self.predictor.detector.detect(frame)
        self.detections += 1
        pairs = match_boxes(np.array([t.box for t in self.tracks]).reshape(-1, 4), boxes, self.match_iou)
        continued = {d: self.tracks[t] for t, d in pairs}
        self.tracks = []
        for d, box in enumerate(boxes):
            track = continued.get(d) or self._new_track(box)
            track.box, track.lost, track.offset = np.asarray(box, dtype=np.float32), False, None
            self.tracks.append(track)

    def update(self, frame: np.ndarray, time_s: float | None = None):
        """Estimate the poses in the next frame.

        Args:
            frame: HxWx3 uint8 RGB.
            time_s: the frame's time in seconds (for smoothing; default: frame number / 30).

        Returns:
            A PoseResult whose `track_ids` [N] are stable across frames (N may be 0).
        """
        time_s = self.frames / 30.0 if time_s is None else float(time_s)
        self.frames += 1
        if self.predictor.detector is None:
            result = self.predictor.predict(frame, flip=self.flip)
            if not self.tracks:
                self.tracks = [self._new_track(np.zeros(4))]
            return self._finish(result, self.tracks, time_s)
        due = self._redetect or not self.tracks or (self.frames - 1) % self.detect_every == 0
        if due:
            self._associate(frame)
        active = [t for t in self.tracks if not t.lost]
        if not active:
            self._redetect = True
            return replace(self.predictor.nobody(frame), track_ids=np.zeros(0, np.int64))
        result = self.predictor.predict(frame, boxes=[t.box for t in active], flip=self.flip)
        kept = np.zeros(len(active), dtype=bool)
        for i, (track, keypoints, scores) in enumerate(zip(active, result.keypoints, result.scores)):
            center = keypoint_center(keypoints, scores)
            if center is None or float(scores.mean()) < self.lost_score:
                track.lost = True
                continue
            size = track.box[2:]
            if track.offset is None:
                track.offset = track.box[:2] + 0.5 * size - center
            track.box = np.array([*(center + track.offset - 0.5 * size), *size], dtype=np.float32)
            kept[i] = True
        self._redetect = not kept.all()
        return self._finish(_people_subset(result, kept), [t for t in active if not t.lost], time_s)

    def _finish(self, result, tracks, time_s):
        keypoints = result.keypoints.copy()
        for i, track in enumerate(tracks):
            if track.smoother is not None:
                keypoints[i] = track.smoother(keypoints[i], time_s)
        return replace(result, keypoints=keypoints.astype(np.float32),
                       track_ids=np.array([t.id for t in tracks], dtype=np.int64))
