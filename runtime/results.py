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
_LINE_COLOR = (0, 220, 255)
_JOINT_COLOR = (255, 60, 60)
_BOX_COLOR = (120, 255, 120)


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


def draw_pose(image: np.ndarray, result, skeleton, min_score: float = DRAW_MIN_SCORE) -> Image.Image:
    """Overlay skeleton lines and joint dots on a copy of the image (and each person's box and id when known).

    Args:
        image: HxWx3 uint8 RGB array (the image that was predicted on).
        result: its PoseResult.
        skeleton: (a, b) joint index pairs to connect.
        min_score: joints scoring at or below this are skipped.

    Returns:
        A Pillow RGB image.
    """
    canvas = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    size = max(1, round(max(canvas.size) / 160))
    for index, (keypoints, scores) in enumerate(zip(result.keypoints, result.scores)):
        if result.boxes is not None:
            x, y, w, h = (float(v) for v in result.boxes[index])
            draw.rectangle([x, y, x + w, y + h], outline=_BOX_COLOR, width=max(1, size // 2))
            label = result.track_ids[index] if result.track_ids is not None else index
            draw.text((x + 2, y + 1), f"#{label}", fill=_BOX_COLOR)
        visible = scores > min_score
        for a, b in skeleton:
            if visible[a] and visible[b]:
                draw.line([tuple(map(float, keypoints[a])), tuple(map(float, keypoints[b]))], fill=_LINE_COLOR, width=size)
        for (x, y), seen in zip(keypoints, visible):
            if seen:
                r = size + 1
                draw.ellipse([x - r, y - r, x + r, y + r], fill=_JOINT_COLOR)
    return canvas
