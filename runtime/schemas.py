"""Response shapes of the pose endpoints, for the OpenAPI docs (/docs, /openapi.json).

They describe what runtime.tasks.pose.pose_to_json returns (the same JSON as `lbdeploy infer`); the
server validates its answers against them. Optional fields appear only when they apply (`box`
when the person came from a box, `box_score` when a detector found it). To add a field, add it to
pose_to_json and here.
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field


class PersonPose(BaseModel):
    """One person's keypoints (COCO results layout)."""

    category_id: int = Field(1, description="COCO category: 1 = person")
    keypoints: list[float] = Field(description="[x1, y1, s1, x2, y2, s2, ...] per joint: image pixels and heatmap peak")
    score: float = Field(description="mean joint score")
    center: list[float] = Field(description="crop centre (x, y)")
    scale: float = Field(description="crop height / 200 pixels")
    id: int = Field(description="track id in a video (stable across frames), else the person's index in the image")
    box: Optional[list[float]] = Field(None, description="person box [x, y, w, h] (given or detected)")
    box_score: Optional[float] = Field(None, description="detector score of the box")


class ImagePoses(BaseModel):
    """The people of one image."""

    image_id: Optional[str] = Field(None, description="the file name the image was sent under, when known")
    width: int
    height: int
    joints: list[str] = Field(description="joint names, in keypoint order")
    skeleton: list[list[int]] = Field(description="joint index pairs to connect")
    people: list[PersonPose]


class BatchPoses(BaseModel):
    """The people of each image of a batch request, in request order."""

    model: Optional[str] = Field(None, description="the model's architecture")
    images: list[ImagePoses]


def image_request_body(form_fields: dict) -> dict:
    """The OpenAPI request body of an image endpoint: raw JPEG/PNG bytes, or a multipart form with a
    `file` and the endpoint's other `form_fields` (name -> JSON schema)."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    form = {"type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"}, **form_fields}}
    return {"required": True, "content": {"image/jpeg": binary, "image/png": binary,
                                          "application/octet-stream": binary,
                                          "multipart/form-data": {"schema": form}}}
