"""Tracking vs detecting every frame: frames/s, id switches and accuracy on the synthetic clip.

    .venv/bin/python bench/tracking.py                     # exports lbdeploy/data/demo.pt (needs torch)
    .venv/bin/python bench/tracking.py --artifact out/ --frames 120 --detect-every 5 --threads 2

The clip is lbdeploy.data.scenes.make_clip (people walking in their bands, exact joints known);
people are found by the scenes' ONNX test detector (runtime.testing.scene_detector). Each mode
runs the whole clip through runtime.tracking.PoseTracker, the modes interleaved round by round
(bench.common.interleaved_times) so machine load hits both alike; frames/s = frames / median
time, frames already decoded in memory. The scene detector is nearly free, so the script also
times OpenCV's HOG detector on the same frames: what detecting every frame costs with a real
detector (HOG finds nobody in these drawings, its cost does not depend on that).

Id switches follow the MOT convention: a truth person whose matched track id differs from the
id it had the last time it was matched. Each posed person is matched to the truth person with
the nearest mean joint distance. PCK: joints within 0.2 x the person's larger box side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import REPO, describe_machine, interleaved_times, machine_description, progress

PCK_FRACTION = 0.2


def score_tracks(results, clip) -> dict:
    """Id switches, missed people and PCK of one run's PoseResults against the clip's truth."""
    last_id, switches, missed, hits = {}, 0, 0, []
    for result, scene in zip(results, clip):
        matched = {}
        for track_id, pose in zip(result.track_ids, result.keypoints):
            distances = [np.linalg.norm(pose - truth, axis=1).mean() for truth in scene.joints]
            truth = int(np.argmin(distances))
            matched[truth] = int(track_id)
            errors = np.linalg.norm(pose - scene.joints[truth], axis=1)
            hits.append(errors <= PCK_FRACTION * max(scene.boxes[truth][2:]))
        for truth in range(len(scene.joints)):
            if truth not in matched:
                missed += 1
            elif truth in last_id and last_id[truth] != matched[truth]:
                switches += 1
        last_id.update(matched)
    return {"id_switches": switches, "missed": missed, "pck": float(np.mean(hits)) if hits else 0.0}


def _artifact(args, work: Path) -> Path:
    if args.artifact:
        return Path(args.artifact)
    from lbdeploy.exporters.export import export_model

    progress("exporting lbdeploy/data/demo.pt (standard ops)")
    export_model(REPO / "lbdeploy" / "data" / "demo.pt", work / "demo", target="onnx", ops="standard")
    return work / "demo"


def main(argv=None) -> int:
    """Run the comparison and print it (stdout); progress on stderr."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", help="exported pose artifact (default: export the bundled demo model)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--people", type=int, default=3)
    parser.add_argument("--detect-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smooth", action="store_true", help="One-Euro smoothing in both modes")
    args = parser.parse_args(argv)

    from lbdeploy.data.scenes import make_clip
    from lbdeploy.runtime.testing.scene_detector import write_scene_detector
    from lbdeploy.runtime.detection import HogDetector
    from lbdeploy.runtime.predictor import Predictor
    from lbdeploy.runtime.tracking import PoseTracker

    machine = machine_description(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        predictor = Predictor(_artifact(args, work), threads=args.threads,
                              detector=str(write_scene_detector(work / "scene_det.onnx")))
        clip = make_clip(0, args.frames, people=args.people)
        fps = 30.0
        modes = {"detect every frame": 1, f"track, detect every {args.detect_every}": args.detect_every}
        outputs = {}

        def runner(name, every):
            def run():
                tracker = PoseTracker(predictor, detect_every=every, smoothing=args.smooth)
                outputs[name] = ([tracker.update(s.image, i / fps) for i, s in enumerate(clip)], tracker.detections)
            return run

        runners = {name: runner(name, every) for name, every in modes.items()}
        hog = HogDetector()
        runners["HOG detector alone"] = lambda: [hog.detect(s.image) for s in clip]
        runners["scene detector alone"] = lambda: [predictor.detector.detect(s.image) for s in clip]
        progress(f"{len(runners)} runners x {args.repeats} rounds over {args.frames} frames")
        times = interleaved_times(runners, args.repeats, warmup=1)["wall"]

    print(f"# bench/tracking.py: {args.frames} frames of {clip[0].image.shape[1]}x{clip[0].image.shape[0]}, "
          f"{args.people} people, {args.threads} thread(s), median of {args.repeats} rounds"
          f"{', One-Euro smoothing' if args.smooth else ''}")
    print(f"# {describe_machine(machine)}")
    print(f"{'mode':<28} {'frames/s':>9} {'ms/frame':>9} {'detector runs':>14} {'id switches':>12} "
          f"{'missed':>7} {'PCK@0.2':>8}")
    for name in modes:
        seconds = statistics.median(times[name])
        results, detections = outputs[name]
        scored = score_tracks(results, clip)
        print(f"{name:<28} {args.frames / seconds:>9.1f} {1e3 * seconds / args.frames:>9.2f} {detections:>14} "
              f"{scored['id_switches']:>12} {scored['missed']:>7} {scored['pck']:>8.3f}")
    for name in ("HOG detector alone", "scene detector alone"):
        print(f"{name:<28} {args.frames / statistics.median(times[name]):>9.1f} "
              f"{1e3 * statistics.median(times[name]) / args.frames:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
