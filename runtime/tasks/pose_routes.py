"""The pose endpoints of the server (runtime.server.create_app adds them through the pose record).

    POST /v1/pose       image (raw body or multipart field "file") -> keypoints JSON
    POST /v1/pose/batch several images (multipart fields "files") -> {"model", "images": [...]}
    POST /v1/heatmaps   same input -> final heatmaps as .npy bytes ([N, J, h, w] float32)

Person boxes come as JSON in the `boxes` query parameter (or form field): [[x, y, w, h], ...];
without them the Predictor's detector finds the people. More boxes or crop pixels than the
server's `limits` allow get 413 (runtime.limits; in a batch, per image, as the images run one
after the other). A body is read only once its request is admitted and must arrive within
`body_timeout_s` (408); a request still running `timeout_s` after its body arrived gets 504 and
its work stops at the next deadline check (runtime.admission, runtime.deadline). The heatmaps are
serialized on the inference pool, not on the event loop. A model of another task answers
WrongTask (404) here.
"""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

from lbdeploy.errors import InputError
from lbdeploy.runtime.admission import predict_in_batches, read_within
from lbdeploy.runtime.image_request import is_multipart, parse_flag, read_image_request
from lbdeploy.runtime.limits import check_work, parse_boxes_json
from lbdeploy.runtime.schemas import BatchPoses, ImagePoses, image_request_body
from lbdeploy.runtime.tasks import require_task
from lbdeploy.runtime.tasks.pose import pose_to_json

MAX_BATCH_IMAGES = 32
_IMAGE_BODY = {"requestBody": image_request_body({
    "boxes": {"type": "string", "description": "JSON [[x, y, w, h], ...]"}, "flip": {"type": "boolean"}})}
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                      "description": f"one field per image, at most {MAX_BATCH_IMAGES}"},
            "flip": {"type": "boolean"}}}}},
    }
}


async def _read_batch(request: Request) -> tuple[list[tuple[str, bytes]], bool]:
    """The (file name, bytes) of each image of a multipart batch request, and the flip flag."""
    if not is_multipart(request):
        raise InputError("send the images as multipart/form-data, one file field named 'files' per image")
    form = await request.form()
    uploads = form.getlist("files")
    if not uploads or any(isinstance(upload, str) for upload in uploads):
        raise InputError("a batch needs one or more image files in multipart fields named 'files'")
    if len(uploads) > MAX_BATCH_IMAGES:
        raise InputError(f"a batch holds at most {MAX_BATCH_IMAGES} images, got {len(uploads)}; split it")
    images = [(upload.filename or str(i), await upload.read()) for i, upload in enumerate(uploads)]
    return images, parse_flag("flip", form.get("flip", request.query_params.get("flip")))


async def _read_pose_request(request: Request) -> tuple[bytes, list | None, bool]:
    """The image bytes, boxes and flip flag of a raw-body or multipart request."""
    data, options = await read_image_request(request, ("boxes", "flip"))
    return data, parse_boxes_json(options["boxes"]), parse_flag("flip", options["flip"])


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def add_pose_routes(app: FastAPI, settings, dependencies: list) -> None:
    """Add the pose endpoints to `app`.

    Args:
        app: the server's app (its state holds predictor, executor and admission).
        settings: the runtime.server.ServerSettings; dependencies: the token check.
    """

    async def predict(request: Request, data: bytes, boxes, flip: bool, return_heatmaps: bool, deadline: float):
        loop = asyncio.get_running_loop()
        return await predict_in_batches(
            request.app.state.predictor, data, boxes, flip, return_heatmaps,
            run=lambda job: loop.run_in_executor(request.app.state.executor, job),
            batch_crops=settings.limits.batch_crops, timeout_s=settings.timeout_s, deadline=deadline)

    async def run_inference(request: Request, return_heatmaps: bool):
        predictor = request.app.state.predictor
        require_task(predictor, "pose", request.url.path)
        with request.app.state.admission.slot():
            data, boxes, flip = await read_within(_read_pose_request(request), settings.body_timeout_s)
            deadline = time.monotonic() + settings.timeout_s
            check_work(len(boxes) if boxes else predictor.max_people, flip, predictor.input_size, settings.limits)
            return await predict(request, data, boxes, flip, return_heatmaps, deadline)

    @app.post("/v1/pose", dependencies=dependencies, openapi_extra=_IMAGE_BODY, response_model=ImagePoses,
              response_model_exclude_unset=True, summary="Keypoints of the people in an image (COCO-style JSON)")
    async def pose(request: Request):
        result = await run_inference(request, return_heatmaps=False)
        predictor = request.app.state.predictor
        return pose_to_json(result, predictor.joint_names, predictor.skeleton)

    @app.post("/v1/pose/batch", dependencies=dependencies, openapi_extra=_BATCH_BODY, response_model=BatchPoses,
              response_model_exclude_unset=True, summary="Keypoints of the people in each of several images")
    async def pose_batch(request: Request):
        predictor = request.app.state.predictor
        require_task(predictor, "pose", request.url.path)
        with request.app.state.admission.slot():
            images, flip = await read_within(_read_batch(request), settings.body_timeout_s)
            deadline = time.monotonic() + settings.timeout_s
            # the images run one after the other, so the caps hold per image (the detector's people)
            check_work(predictor.max_people, flip, predictor.input_size, settings.limits)
            results = [await predict(request, data, None, flip, False, deadline) for _, data in images]
        return {"model": predictor.manifest.get("arch"),
                "images": [pose_to_json(result, predictor.joint_names, predictor.skeleton, image_id=name)
                           for (name, _), result in zip(images, results)]}

    @app.post("/v1/heatmaps", dependencies=dependencies, openapi_extra=_IMAGE_BODY,
              response_class=Response, summary="Final heatmaps as a .npy float32 [N, J, h, w] array")
    async def heatmaps(request: Request):
        result = await run_inference(request, return_heatmaps=True)
        # up to max_boxes x J x h x w floats: serialized on the pool, not on the event loop
        body = await asyncio.get_running_loop().run_in_executor(request.app.state.executor, _npy_bytes, result.heatmaps)
        return Response(body, media_type="application/octet-stream",
                        headers={"Content-Disposition": 'attachment; filename="heatmaps.npy"'})
