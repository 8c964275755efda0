"""Multi-person scenes and short clips made of the synthetic stick figures, with known joints.

The synthetic pose set (lbdeploy.data.synthetic) draws one person filling a square image, the
way training crops look. Real inputs are wider and hold several people anywhere in the frame;
`make_scene` places `people` figures side by side, each off-centre in its own vertical band of a
`width` x `height` image, and `make_clip` moves them over frames (each keeps its band, so the
figure with truth index k is the same person in every frame). Both return the exact joints and
the tight person boxes, so detection, cropping, pose and tracking can be scored end to end.

The background is one flat colour (`BACKGROUND`), unlike the textured backgrounds of the pose
set: it is the cue the test detector of tests/scene_detector.py relies on (anything that is not
background is a person, and people never share a band). Figures keep the synthetic set's looks
(`_pose` geometry, `_draw_figure` appearance); to change those, edit lbdeploy/data/synthetic.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from lbdeploy.data.synthetic import _draw_figure, _head_box, _pose
from lbdeploy.errors import ConfigError

# No figure pixel has a blue channel below 35 (body colours are 64..191 per channel, shaded at most
# 45 % toward black), so this olive is never part of a person; the demo model also finds joints on
# it as well as on its training backgrounds (on black it does not: crops are padded with black).
BACKGROUND = (70, 70, 0)
# Each figure is drawn in a square of this fraction of min(band width, image height).
FIGURE_SQUARE = (0.75, 1.0)


@dataclass
class Scene:
    """One image with several people.

    Attributes:
        image: HxWx3 uint8 RGB.
        joints: [P, 16, 2] float64 (x, y) of each person's MPII joints, image pixels.
        boxes: [P, 4] float64 tight (x, y, w, h) boxes around each figure (joints and head).
    """

    image: np.ndarray
    joints: np.ndarray
    boxes: np.ndarray


@dataclass
class _Figure:
    joints: np.ndarray     # in the figure's own square
    head: np.ndarray       # (cx, cy, a, b, angle) in the square
    width: float
    side: int              # the square's side in pixels
    draw_seed: list        # seeds the colours, so every frame draws the figure alike


def _figures(rng: np.random.Generator, seed: int, width: int, height: int, people: int):
    """Each person's figure and its square's top-left corner, one per vertical band."""
    if people < 1 or width < 32 * people or height < 32:
        raise ConfigError(f"a scene of {width}x{height} cannot hold {people} people of at least 32 pixels")
    band = width / people
    placed = []
    for k in range(people):
        side = int(rng.uniform(*FIGURE_SQUARE) * min(band, height))
        joints, head, limb = _pose(rng, side)
        origin = np.array([k * band + rng.uniform(0, band - side), rng.uniform(0, height - side)])
        placed.append((_Figure(joints, head, limb, side, [seed, k]), origin))
    return placed


def _tight_box(joints: np.ndarray, head: np.ndarray) -> np.ndarray:
    head_box = _head_box(head)
    low = np.minimum(joints.min(axis=0), head_box[:2])
    high = np.maximum(joints.max(axis=0), head_box[2:])
    return np.array([*low, *(high - low)])


def _render(width: int, height: int, placed) -> Scene:
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    all_joints, boxes = [], []
    for figure, origin in placed:
        joints = figure.joints + origin
        head = figure.head.copy()
        head[:2] += origin
        _draw_figure(canvas, np.random.default_rng(figure.draw_seed), joints, head, figure.width)
        all_joints.append(joints)
        boxes.append(_tight_box(joints, head))
    return Scene(np.asarray(canvas, dtype=np.uint8), np.array(all_joints), np.array(boxes))


def make_scene(seed: int, width: int = 384, height: int = 256, people: int = 3) -> Scene:
    """A flat background with `people` stick figures, one per vertical band, at random places.

    Args:
        seed: the scene is a pure function of (seed, width, height, people).
        width, height: image size in pixels.
        people: number of figures (each needs a band at least 32 pixels wide).

    Returns:
        The Scene (image, truth joints, truth boxes), people ordered left to right.

    Raises:
        ConfigError: an image too small for the people asked for.
    """
    rng = np.random.default_rng([seed, 2])
    return _render(width, height, _figures(rng, seed, width, height, people))


def make_clip(seed: int, frames: int, width: int = 384, height: int = 256, people: int = 2,
              speed: float = 3.0) -> list[Scene]:
    """`frames` scenes of the same people walking inside their bands (bouncing off the band edges).

    Args:
        seed: the clip is a pure function of its arguments.
        frames: number of frames.
        width, height, people: as make_scene.
        speed: largest step per frame in pixels, on each axis.

    Returns:
        One Scene per frame; person k of every frame is the same figure (the truth track k).
    """
    rng = np.random.default_rng([seed, 3])
    placed = _figures(rng, seed, width, height, people)
    band = width / people
    velocity = rng.uniform(-speed, speed, size=(people, 2))
    clip = []
    for _ in range(frames):
        clip.append(_render(width, height, placed))
        moved = []
        for k, (figure, origin) in enumerate(placed):
            low = np.array([k * band, 0.0])
            high = np.maximum(low, [(k + 1) * band - figure.side, height - figure.side])
            step = origin + velocity[k]
            bounce = (step < low) | (step > high)
            velocity[k] = np.where(bounce, -velocity[k], velocity[k])
            moved.append((figure, np.clip(step, low, high)))
        placed = moved
    return clip
