"""Video files and cameras in, annotated video out, through OpenCV (opencv-python-headless < 5).

    from lbdeploy.runtime.video import open_video, open_camera, VideoWriter
    with open_video("clip.mp4") as source:          # or open_camera(0) for /dev/video0 (V4L2)
        for frame in source:                          # Frame(index, time_s, image HxWx3 RGB uint8)
            ...
        source.broken                                 # frames that failed to decode and were skipped

A frame that fails to decode is skipped and counted (`broken`); the stream ends after
`MAX_CONSECUTIVE_FAILURES` failed reads in a row (the end of a file reads as failures too, and
failures after the last good frame are not counted). A file that cannot be opened or whose first
frame cannot be decoded, and a camera that cannot be opened, raise InputError with one line.
`max_fps` drops frames so that at most that many per second (of video time for files, wall time
for cameras) come out. To read another kind of source, write a class with the same iteration
protocol and attributes (`fps`, `size`, `frame_count`, `broken`, `skipped`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lbdeploy.errors import BackendUnavailable, InputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
MAX_CONSECUTIVE_FAILURES = 25
# FourCC of the encoder per output suffix (both ship with opencv-python-headless's FFmpeg).
WRITER_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}
DEFAULT_FPS = 30.0


def _cv2():
    try:
        import cv2
    except ImportError as err:
        raise BackendUnavailable("video and camera input need OpenCV: pip install 'lbdeploy[video]'") from err
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our errors say it in one line
    return cv2


def is_video(path) -> bool:
    """True when `path` has a video file suffix (VIDEO_SUFFIXES)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class Frame:
    """One decoded frame: its index among the decoded frames, its time in seconds, HxWx3 uint8 RGB pixels."""

    index: int
    time_s: float
    image: np.ndarray


class VideoSource:
    """Frames of an opened cv2.VideoCapture (build it with open_video or open_camera).

    Attributes:
        name: what was opened (for messages); fps: frames per second (DEFAULT_FPS when unknown);
        size: (width, height); frame_count: frames in a file (None for cameras);
        broken: frames that failed to decode; skipped: frames dropped by max_fps.
    """

    def __init__(self, capture, name: str, live: bool, max_fps: float | None = None):
        cv2 = _cv2()
        self._capture, self.name, self.live = capture, name, live
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else DEFAULT_FPS
        self.size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not live else 0
        self.frame_count = count if count > 0 else None
        self.max_fps = float(max_fps) if max_fps else None
        self.broken = self.skipped = 0
        self._decoded = 0
        self._start = time.monotonic()
        self._next_time = 0.0
        self._pending = None

    def _read(self):
        """The next decoded BGR frame, or None at the end; counts failed reads followed by a good one."""
        failures = 0
        while failures < MAX_CONSECUTIVE_FAILURES:
            ok, image = self._capture.read()
            if ok and image is not None and image.size:
                self.broken += failures
                return image
            failures += 1
        return None

    def first(self) -> np.ndarray | None:
        """Decode the first frame now (kept for iteration); None when nothing decodes."""
        if self._pending is None:
            self._pending = self._read()
        return self._pending

    def __iter__(self):
        while True:
            image = self._pending if self._pending is not None else self._read()
            self._pending = None
            if image is None:
                return
            index = self._decoded
            self._decoded += 1
            time_s = time.monotonic() - self._start if self.live else index / self.fps
            if self.max_fps:
                if time_s + 1e-9 < self._next_time:
                    self.skipped += 1
                    continue
                self._next_time = max(self._next_time + 1.0 / self.max_fps, time_s)
            yield Frame(index, time_s, np.ascontiguousarray(image[..., ::-1]))

    def close(self) -> None:
        """Release the file or device."""
        self._capture.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_video(path, max_fps: float | None = None) -> VideoSource:
    """Open a video file.

    Raises:
        InputError: a missing file, or one that OpenCV's FFmpeg cannot open or decode a first frame of.
    """
    cv2 = _cv2()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"video file {path!r} does not exist")
    source = VideoSource(cv2.VideoCapture(path, cv2.CAP_FFMPEG), path, live=False, max_fps=max_fps)
    if not source._capture.isOpened() or source.first() is None:
        source.close()
        raise InputError(f"video file {path!r} cannot be decoded; convert it to H.264 MP4 or MJPEG AVI")
    return source


def open_camera(index: int, max_fps: float | None = None, size: tuple[int, int] | None = None) -> VideoSource:
    """Open camera `index` (/dev/videoN through V4L2).

    Args:
        index: the N of /dev/videoN.
        max_fps: at most this many frames per second come out (the rest are dropped).
        size: ask the camera for this (width, height); it may pick the nearest mode it has.

    Raises:
        InputError: no such device, or it cannot be opened or delivers no frame.
    """
    cv2 = _cv2()
    device = f"/dev/video{int(index)}"
    if not os.path.exists(device):
        raise InputError(f"camera {index} cannot be opened: {device} does not exist "
                         "(list cameras with `ls /dev/video*`; in a container pass --device /dev/videoN)")
    capture = cv2.VideoCapture(int(index), cv2.CAP_V4L2)
    if size:
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, int(size[0]))
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, int(size[1]))
    source = VideoSource(capture, device, live=True, max_fps=max_fps)
    if not capture.isOpened() or source.first() is None:
        source.close()
        raise InputError(f"camera {index} ({device}) cannot be opened or sends no frames; "
                         "check that no other program uses it and that you may read it (group 'video')")
    return source


class VideoWriter:
    """Write RGB frames to a video file (.mp4/.m4v/.mov: MPEG-4 Part 2, .avi: MJPEG).

    Raises:
        InputError: an unsupported suffix or a file OpenCV cannot create.
    """

    def __init__(self, path, fps: float, size: tuple[int, int]):
        cv2 = _cv2()
        self.path = Path(path)
        codec = WRITER_CODECS.get(self.path.suffix.lower())
        if codec is None:
            raise InputError(f"cannot write video {str(self.path)!r}: use one of {', '.join(WRITER_CODECS)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*codec), float(fps), tuple(size))
        if not self._writer.isOpened():
            raise InputError(f"cannot create video {str(self.path)!r}; check the folder is writable")
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        """Append one HxWx3 uint8 RGB frame."""
        self._writer.write(np.ascontiguousarray(np.asarray(image)[..., ::-1]))
        self.frames += 1

    def close(self) -> None:
        """Finish the file."""
        self._writer.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
