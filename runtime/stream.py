"""The frame loop of `lbdeploy infer` on a video or a camera: track, write JSON lines, draw, report.

    from lbdeploy.runtime.stream import run_stream
    stats = run_stream(source, tracker, json_lines=open("poses.jsonl", "w"), draw_path="out.mp4")

Each processed frame gives one JSON line: the per-image JSON of runtime.tasks.pose.pose_to_json
(people with "id" = track id, "box", "keypoints", ...) plus "frame" (index among the decoded
frames) and "time" (seconds). Progress with frames/s goes to stderr through tqdm; Ctrl-C
ends the run cleanly (the files written so far are complete). The loop is library code so the
CLI, a service or a notebook drive it alike; to send results elsewhere (MQTT, a socket), pass
any object with a `write(str)` method as `json_lines`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

import numpy as np

from lbdeploy.runtime.tasks.pose import draw_pose, pose_to_json


@dataclass
class StreamStats:
    """What a run processed: frames posed, frames dropped by max_fps, broken frames skipped, seconds."""

    frames: int
    skipped: int
    broken: int
    seconds: float
    detections: int

    @property
    def fps(self) -> float:
        """Posed frames per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


NO_PERSON_FRAMES = 30  # frames without anybody before `no_person_warning` is shown


def run_stream(source, tracker, json_lines=None, draw_path=None, max_frames: int | None = None,
               progress: bool = True, no_person_warning: str | None = None) -> StreamStats:
    """Pose every frame of `source` with `tracker`.

    Args:
        source: a runtime.video.VideoSource (or anything iterating Frame objects with the same attributes).
        tracker: a runtime.tracking.PoseTracker.
        json_lines: a text stream receiving one JSON object per frame and line (None: no JSON).
        draw_path: write the annotated frames to this video file (None: no video).
        max_frames: stop after this many posed frames (None: the whole source).
        progress: show a tqdm progress bar with frames/s on stderr.
        no_person_warning: written once to stderr (with "{frames}" filled in) when nobody has been
            found in the first NO_PERSON_FRAMES frames, or in a shorter source by its end.

    Returns:
        StreamStats of the run.

    Raises:
        InputError: an output video that cannot be written.
    """
    from tqdm import tqdm

    from lbdeploy.runtime.video import VideoWriter

    predictor = tracker.predictor
    writer = None
    total = min(filter(None, (source.frame_count, max_frames)), default=None)
    bar = tqdm(total=total, unit="frame", desc=str(source.name), disable=not progress, file=sys.stderr)
    frames, start, anybody = 0, time.perf_counter(), False

    def warn_once_if_nobody() -> None:
        nonlocal anybody
        if not anybody and frames and no_person_warning:
            bar.write(no_person_warning.format(frames=frames), file=sys.stderr)
            anybody = True  # said once

    try:
        for frame in source:
            result = tracker.update(frame.image, frame.time_s)
            if json_lines is not None:
                line = pose_to_json(result, predictor.joint_names, predictor.skeleton, image_id=str(source.name))
                json_lines.write(json.dumps({"frame": frame.index, "time": round(frame.time_s, 4), **line}) + "\n")
            if draw_path is not None:
                if writer is None:
                    height, width = frame.image.shape[:2]
                    writer = VideoWriter(draw_path, source.max_fps or source.fps, (width, height))
                writer.write(np.asarray(draw_pose(frame.image, result, predictor.skeleton, predictor.joint_names)))
            frames += 1
            anybody = anybody or len(result.keypoints) > 0
            if frames == NO_PERSON_FRAMES:
                warn_once_if_nobody()
            bar.update(1)
            bar.set_postfix(people=len(result.keypoints), broken=source.broken, refresh=False)
            if max_frames and frames >= max_frames:
                break
        warn_once_if_nobody()
    except KeyboardInterrupt:  # Ctrl-C ends a camera run; what was written so far is kept
        pass
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return StreamStats(frames, source.skipped, source.broken, time.perf_counter() - start, tracker.detections)
