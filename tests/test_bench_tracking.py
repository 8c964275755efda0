"""bench/tracking.py: the id-switch scoring against known truth, and the report's structure (no
speed is asserted: figures live in docs/benchmarks.md)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lbdeploy.data.scenes import make_clip
from lbdeploy.runtime.predictor import PoseResult

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from tracking import score_tracks  # noqa: E402


def _result(poses, ids):
    poses = np.asarray(poses, dtype=np.float32)
    n = len(poses)
    return PoseResult(keypoints=poses, scores=np.ones(poses.shape[:2], np.float32), centers=np.zeros((n, 2)),
                      scales=np.ones(n), image_size=(384, 256), track_ids=np.asarray(ids))


def test_id_switches_missed_people_and_pck_are_counted():
    clip = make_clip(0, 4, people=2)
    truth = [scene.joints for scene in clip]
    results = [
        _result(truth[0], [0, 1]),
        _result(truth[1], [0, 1]),
        _result(truth[2][::-1], [0, 1]),  # the ids trade places: both people switch
        _result(truth[3][:1], [7]),       # person 0 under a new id (a switch), person 1 missed
    ]
    scored = score_tracks(results, clip)
    assert scored == {"id_switches": 3, "missed": 1, "pck": 1.0}
    wrong = [_result(t + 100.0, [0, 1]) for t in truth]
    assert score_tracks(wrong, clip)["pck"] == 0.0


def test_bench_tracking_reports_both_modes(demo_artifact):
    pytest.importorskip("cv2", reason="the HOG timing needs opencv-python-headless")
    done = subprocess.run([sys.executable, str(REPO / "bench" / "tracking.py"), "--artifact", str(demo_artifact),
                           "--frames", "6", "--repeats", "1", "--detect-every", "3"],
                          capture_output=True, text=True, timeout=1800, cwd=REPO)  # a hang guard
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line[:28].strip(): line[28:].split() for line in done.stdout.splitlines() if not line.startswith("#")}
    assert rows["mode"][:2] == ["frames/s", "ms/frame"]
    every, tracked = rows["detect every frame"], rows["track, detect every 3"]
    assert (every[2], tracked[2]) == ("6", "2")  # detector runs
    assert every[3] == tracked[3] == "0" and float(every[5]) > 0.5  # no id switch, joints found
    assert len(rows["HOG detector alone"]) == 2
