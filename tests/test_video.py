"""Video files and cameras through OpenCV, pose tracking across frames (ids, detector cadence,
lost tracks, One-Euro smoothing) and `lbdeploy infer` on a clip generated from the synthetic set."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from lbdeploy.data.scenes import BACKGROUND, make_clip
from lbdeploy.errors import InputError

cv2 = pytest.importorskip("cv2", reason="video needs opencv-python-headless")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from lbdeploy.runtime.predictor import Predictor  # noqa: E402
from lbdeploy.runtime.tracking import OneEuroFilter, PoseTracker  # noqa: E402
from lbdeploy.runtime.video import VideoWriter, open_camera, open_video  # noqa: E402

FPS = 10.0


def _write(path, frames, fps=FPS):
    with VideoWriter(path, fps, (frames[0].shape[1], frames[0].shape[0])) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def _colour_frames(count=8):
    """Frames of one flat colour each: red, then green, ... (to check frame order and RGB order)."""
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    return [np.full((48, 64, 3), colours[i % len(colours)], np.uint8) for i in range(count)]


# --- reading and writing ----------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_video_round_trip_keeps_frames_order_and_rgb(tmp_path, suffix):
    frames = _colour_frames()
    path = _write(tmp_path / f"clip{suffix}", frames)
    with open_video(path) as source:
        read = list(source)
        assert source.size == (64, 48) and source.fps == pytest.approx(FPS) and source.frame_count == 8
    assert [f.index for f in read] == list(range(8))
    assert [f.time_s for f in read] == pytest.approx([i / FPS for i in range(8)])
    for got, sent in zip(read, frames):
        np.testing.assert_allclose(got.image.reshape(-1, 3).mean(axis=0), sent[0, 0], atol=12)


def test_a_broken_frame_is_skipped_and_counted(tmp_path):
    frames = _colour_frames()
    path = _write(tmp_path / "clip.avi", frames)
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]  # JPEG start markers
    assert len(starts) == 8
    data[starts[3]:starts[4] - 8] = bytes(starts[4] - 8 - starts[3])  # frame 3's JPEG (not its AVI chunk header)
    path.write_bytes(bytes(data))
    with open_video(path) as source:
        read = list(source)
        assert source.broken == 1
    assert len(read) == 7
    for got, sent in zip(read, frames[:3] + frames[4:]):  # frame 4 follows frame 2
        np.testing.assert_allclose(got.image[0, 0], sent[0, 0], atol=12)


def test_max_fps_drops_frames(tmp_path):
    path = _write(tmp_path / "clip.avi", _colour_frames(10))
    with open_video(path, max_fps=FPS / 2) as source:
        read = list(source)
        assert source.skipped == 5
    assert [f.index for f in read] == [0, 2, 4, 6, 8]


def test_undecodable_video_missing_camera_and_bad_output_are_input_errors(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"definitely not a video" * 50)
    with pytest.raises(InputError, match="cannot be decoded"):
        open_video(junk)
    with pytest.raises(InputError, match="does not exist"):
        open_video(tmp_path / "missing.mp4")
    with pytest.raises(InputError, match=r"camera 63 cannot be opened: /dev/video63 does not exist"):
        open_camera(63)
    with pytest.raises(InputError, match="use one of"):
        VideoWriter(tmp_path / "out.gif", FPS, (64, 48))


@pytest.mark.parametrize("args, message", [
    (["junk.mp4"], "cannot be decoded"), (["--camera", "63"], "camera 63"), ([], "give IMAGES"),
    (["clip.avi", "clip.avi"], "one video at a time"), (["clip.avi", "--box", "1,2,3,4"], "--box applies to images"),
])
def test_infer_video_errors_are_one_line_exit_2(tmp_path, args, message):
    from click.testing import CliRunner

    from lbdeploy.cli import main
    from runtime_artifacts import pool_manifest, pool_model, write_artifact

    artifact = write_artifact(tmp_path / "a", pool_model(), pool_manifest())
    (tmp_path / "junk.mp4").write_bytes(b"junk" * 100)
    _write(tmp_path / "clip.avi", _colour_frames(2))
    args = [str(tmp_path / a) if a.endswith((".mp4", ".avi")) else a for a in args]
    result = CliRunner().invoke(main, ["infer", str(artifact), *args, "--detector", "none"])
    assert result.exit_code == 2 and message in result.output
    assert result.output.startswith("Error:") and result.output.count("\n") == 1


# --- One-Euro smoothing -----------------------------------------------------------------------------

def test_one_euro_filter_smooths_jitter_and_follows_motion():
    rng = np.random.default_rng(0)
    times = np.arange(120) / 30.0
    still = np.array([[50.0, 80.0]]) + rng.normal(0, 2.0, size=(120, 1, 2))
    smoother = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    smoothed = np.array([smoother(x, t) for x, t in zip(still, times)])
    assert smoothed[30:].std(axis=0).max() < 0.5 * still[30:].std(axis=0).min()
    moving = np.stack([np.array([[t * 300.0, 0.0]]) for t in times])  # 300 px/s
    fast = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    slow = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    lag_fast = abs(np.array([fast(x, t) for x, t in zip(moving, times)])[-1, 0, 0] - moving[-1, 0, 0])
    lag_slow = abs(np.array([slow(x, t) for x, t in zip(moving, times)])[-1, 0, 0] - moving[-1, 0, 0])
    assert lag_fast < 0.5 * lag_slow  # speed raises the cutoff: less lag on fast motion


# --- tracking on the synthetic clip (demo model + scene detector) -------------------------------------

@pytest.fixture(scope="module")
def clip():
    return make_clip(0, 24, people=3)


@pytest.fixture(scope="module")
def tracked_predictor(demo_artifact, scene_detector):
    return Predictor(demo_artifact, threads=1, detector=str(scene_detector))


def _truth_of(result, scene) -> list[int]:
    """Index of the truth person nearest to each posed person (mean joint distance)."""
    return [int(np.argmin([np.linalg.norm(pose - truth, axis=1).mean() for truth in scene.joints]))
            for pose in result.keypoints]


def test_tracker_keeps_ids_and_detects_every_n_frames(tracked_predictor, clip):
    tracker = PoseTracker(tracked_predictor, detect_every=8)
    identity = {}
    for i, scene in enumerate(clip):
        result = tracker.update(scene.image, i / FPS)
        assert len(result.track_ids) == 3
        for track_id, truth in zip(result.track_ids, _truth_of(result, scene)):
            assert identity.setdefault(int(track_id), truth) == truth  # an id never changes person
    assert sorted(identity) == [0, 1, 2]
    assert tracker.detections == 3  # frames 0, 8 and 16


def test_a_lost_person_forces_a_detection_and_keeps_its_id(tracked_predictor, clip):
    tracker = PoseTracker(tracked_predictor, detect_every=100)
    first = tracker.update(clip[0].image, 0.0)
    empty = np.full_like(clip[0].image, BACKGROUND)
    gone = tracker.update(empty, 0.1)  # everybody vanishes: the crops find no joints
    assert len(gone.track_ids) == 0 and tracker.detections == 1
    back = tracker.update(clip[1].image, 0.2)  # detection runs again and the boxes match the old tracks
    assert tracker.detections == 2
    assert sorted(back.track_ids.tolist()) == sorted(first.track_ids.tolist())


def test_without_a_detector_the_whole_frame_is_track_0(demo_artifact, clip):
    tracker = PoseTracker(Predictor(demo_artifact, threads=1), smoothing=True)
    results = [tracker.update(scene.image, i / FPS) for i, scene in enumerate(clip[:3])]
    assert [r.track_ids.tolist() for r in results] == [[0], [0], [0]] and tracker.detections == 0


def test_infer_on_a_clip_writes_jsonl_with_stable_ids_and_an_annotated_video(demo_artifact, scene_detector, clip,
                                                                             tmp_path):
    from click.testing import CliRunner

    from lbdeploy.cli import main

    video = _write(tmp_path / "clip.avi", [scene.image for scene in clip])
    out_video, out_jsonl = tmp_path / "out.mp4", tmp_path / "poses.jsonl"
    result = CliRunner().invoke(main, ["infer", str(demo_artifact), str(video), "--detector", str(scene_detector),
                                       "--draw", str(out_video), "--json", str(out_jsonl), "--detect-every", "6",
                                       "--smooth", "--threads", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "no person found" not in result.output
    detections = int(re.search(r"24 frames in .* frames/s, detector on (\d+)\)", result.output).group(1))
    assert 4 <= detections <= 8  # frames 0, 6, 12, 18, and after a lost track
    lines = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(24))
    identity = {}
    for line, scene in zip(lines, clip):
        assert len(line["people"]) == 3
        for person in line["people"]:
            pose = np.array(person["keypoints"]).reshape(16, 3)[:, :2]
            truth = int(np.argmin([np.linalg.norm(pose - t, axis=1).mean() for t in scene.joints]))
            assert identity.setdefault(person["id"], truth) == truth
            assert len(person["box"]) == 4
    assert sorted(identity) == [0, 1, 2]
    with open_video(out_video) as drawn:
        frames = list(drawn)
    assert len(frames) == 24 and drawn.size == (384, 256)
    assert np.abs(frames[5].image.astype(int) - clip[5].image).mean() > 0.5  # skeletons and boxes drawn


def test_a_video_without_people_warns_once_with_the_fix(demo_artifact, scene_detector, clip, tmp_path):
    from click.testing import CliRunner

    from lbdeploy.cli import main

    video = _write(tmp_path / "empty.avi", [np.full_like(clip[0].image, BACKGROUND)] * 4)
    result = CliRunner().invoke(main, ["infer", str(demo_artifact), str(video), "--detector", str(scene_detector),
                                       "--json", "-", "--threads", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "no person found" in line]
    assert len(warnings) == 1 and "in the first 4 frames" in warnings[0] and "--detector none" in warnings[0]
    assert [json.loads(line)["people"] for line in result.stdout.splitlines()] == [[]] * 4  # --json -: stdout


def test_scene_files_for_the_demo(tmp_path):
    pytest.importorskip("onnx", reason="building the scene detector needs onnx")
    from lbdeploy.runtime.testing.scene_files import main
    from lbdeploy.runtime.detection import create_detector

    assert main([str(tmp_path), "--frames", "5", "--people", "2"]) == 0
    with open_video(tmp_path / "clip.mp4") as source:
        frames = list(source)
    assert len(frames) == 5 and source.size == (384, 256)
    detector = create_detector(str(tmp_path / "scene_det.onnx"))
    assert len(detector.detect(np.asarray(Image.open(tmp_path / "scene.png")))[0]) == 2
    assert len(detector.detect(frames[0].image)[0]) == 2
