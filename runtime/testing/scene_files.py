"""Write a multi-person scene image, a short clip and the scene test detector to a folder.

    python -m lbdeploy.runtime.testing.scene_files OUT_DIR [--frames 60] [--people 3] [--seed 0]

Writes OUT_DIR/scene.png (people off-centre, several per image), OUT_DIR/clip.mp4 (the same kind of
people walking) and OUT_DIR/scene_det.onnx + scene_det.json (the ONNX detector that finds them, in
MMDeploy's layout), so `lbdeploy infer` can be tried on people it must find and track, with exact
truth known to lbdeploy.data.scenes. scripts/demo.sh runs it. Needs onnx and opencv-python-headless.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from lbdeploy.data.scenes import make_clip, make_scene
from lbdeploy.runtime.testing.scene_detector import write_scene_detector

CLIP_FPS = 15.0


def write_scene_files(folder, frames: int = 60, people: int = 3, seed: int = 0) -> dict:
    """Write scene.png, clip.mp4 and scene_det.onnx (+ .json) into `folder`; returns their paths by name."""
    from lbdeploy.runtime.video import VideoWriter

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"scene": folder / "scene.png", "clip": folder / "clip.mp4", "detector": folder / "scene_det.onnx"}
    scene = make_scene(seed, people=people)
    Image.fromarray(scene.image).save(paths["scene"])
    with VideoWriter(paths["clip"], CLIP_FPS, (scene.image.shape[1], scene.image.shape[0])) as writer:
        for frame in make_clip(seed, frames, people=people):
            writer.write(frame.image)
    write_scene_detector(paths["detector"])
    return paths


def main(argv=None) -> int:
    """Command-line entry: parse, write, print the paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--people", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in write_scene_files(args.out_dir, args.frames, args.people, args.seed).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
