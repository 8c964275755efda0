"""Presenting a PoseResult: COCO-style JSON and an overlay image (Pillow).

JSON follows the COCO keypoint results layout: one entry per person with `keypoints` as a flat
[x1, y1, s1, x2, y2, s2, ...] list (s = heatmap peak instead of COCO's visibility flag), plus the
joint names and skeleton so the file is self-describing. To add a format, add a function taking
(result, joint_names, ...) here.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# Joints whose score is at or below this are not drawn (a flat or negative heatmap).
DRAW_MIN_SCORE = 0.0
# The person's left and right in two colours and the body's axis in a third, as MMPose draws them
# (left green, right orange, centre blue); a joint's side comes from its name ("l_..." / "r_...").
SIDE_COLORS = {"left": (0, 255, 0), "right": (255, 128, 0), "centre": (51, 153, 255)}
_BOX_COLOR = (255, 255, 255)
# Marks scale with the person (box or keypoint extent): dot radius and line width = extent / this,
# the id label's height = extent / _LABEL_DIVISOR, within _LABEL_PX.
_MARK_DIVISOR = 60
_LABEL_DIVISOR = 8
_LABEL_PX = (8, 28)


def pose_to_json(result, joint_names, skeleton=(), image_id=None) -> dict:
    """COCO-style dict for one image.

    Args:
        result: a PoseResult.
        joint_names: names of the J joints, in output order.
        skeleton: (a, b) joint index pairs.
        image_id: any identifier to echo back (e.g. the file name).

    Returns:
        {"image_id", "width", "height", "joints", "skeleton", "people": [{"category_id": 1,
        "keypoints": [x, y, s] * J, "score", "center", "scale", "id"}]}, plus "box" [x, y, w, h]
        when the person came from a box and "box_score" when a detector found it. "id" is the
        track id in a video (stable across frames), else the person's index in the image.
    """
    people = []
    for index, (keypoints, scores, center, scale) in enumerate(
            zip(result.keypoints, result.scores, result.centers, result.scales)):
        triples = np.concatenate([keypoints, scores[:, None]], axis=1)
        person = {
            "category_id": 1,
            "keypoints": [round(float(v), 3) for v in triples.ravel()],
            "score": round(float(np.mean(scores)), 5),
            "center": [round(float(v), 3) for v in center],
            "scale": round(float(scale), 5),
            "id": int(result.track_ids[index]) if result.track_ids is not None else index,
        }
        if result.boxes is not None:
            person["box"] = [round(float(v), 2) for v in result.boxes[index]]
        if result.box_scores is not None:
            person["box_score"] = round(float(result.box_scores[index]), 4)
        people.append(person)
    width, height = result.image_size
    return {"image_id": image_id, "width": width, "height": height, "joints": list(joint_names),
            "skeleton": [list(edge) for edge in skeleton], "people": people}


def joint_sides(joint_names) -> list[str]:
    """'left', 'right' or 'centre' per joint, from the names' l_ / r_ prefixes (MPII and LSP names)."""
    return ["left" if name.startswith("l_") else "right" if name.startswith("r_") else "centre"
            for name in joint_names]


def _person_extent(keypoints: np.ndarray, visible: np.ndarray, box) -> float:
    if box is not None:
        return float(max(box[2], box[3]))
    points = keypoints[visible] if visible.any() else keypoints
    return float(np.ptp(points, axis=0).max()) if len(points) else 0.0


def draw_pose(image: np.ndarray, result, skeleton, joint_names=(), min_score: float = DRAW_MIN_SCORE) -> Image.Image:
    """Overlay skeleton lines and joint dots on a copy of the image (and each person's box and id when known).

    Left and right limbs and joints get two colours and the body's axis a third (SIDE_COLORS); dots,
    lines and the id label scale with the person, so a small figure is not covered by its marks.

    Args:
        image: HxWx3 uint8 RGB array (the image that was predicted on).
        result: its PoseResult.
        skeleton: (a, b) joint index pairs to connect.
        joint_names: the joints' names, which tell their side (empty: everything in the centre colour).
        min_score: joints scoring at or below this are skipped.

    Returns:
        A Pillow RGB image.
    """
    from PIL import ImageFont

    canvas = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    joints = np.asarray(result.keypoints).shape[1] if np.asarray(result.keypoints).ndim == 3 else 0
    sides = joint_sides(joint_names) if len(joint_names) else ["centre"] * joints
    for index, (keypoints, scores) in enumerate(zip(result.keypoints, result.scores)):
        visible = scores > min_score
        box = result.boxes[index] if result.boxes is not None else None
        extent = _person_extent(keypoints, visible, box)
        size = max(1, round(extent / _MARK_DIVISOR))
        if box is not None:
            x, y, w, h = (float(v) for v in box)
            draw.rectangle([x, y, x + w, y + h], outline=_BOX_COLOR, width=max(1, size // 2))
            label = result.track_ids[index] if result.track_ids is not None else index
            font = ImageFont.load_default(size=int(np.clip(extent / _LABEL_DIVISOR, *_LABEL_PX)))
            draw.text((x + 2, y + 1), f"#{label}", fill=_BOX_COLOR, font=font, stroke_width=1, stroke_fill=(0, 0, 0))
        for a, b in skeleton:
            if visible[a] and visible[b]:
                side = sides[a] if sides[a] == sides[b] else "centre"
                draw.line([tuple(map(float, keypoints[a])), tuple(map(float, keypoints[b]))], fill=SIDE_COLORS[side],
                          width=size)
        for (x, y), seen, side in zip(keypoints, visible, sides):
            if seen:
                r = size
                draw.ellipse([x - r, y - r, x + r, y + r], fill=SIDE_COLORS[side], outline=(0, 0, 0))
    return canvas
