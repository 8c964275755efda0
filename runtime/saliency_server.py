"""The saliency endpoint of the server (runtime.server): POST /v1/saliency, and the task guard.

`create_app` serves one model; its task decides which endpoints answer. A saliency model
(runtime.saliency.SaliencyPredictor) answers `POST /v1/saliency`; the pose endpoints answer
`WrongTask` (404) for it, and /v1/saliency does for a pose model. The request is the image as the
raw body or the multipart field `file` (as /v1/pose); `format=png` (default) answers the saliency
map as an 8-bit grayscale PNG at the image's size, `format=json` the statistics of
runtime.saliency_results.saliency_to_json. The server's limits apply unchanged (body size,
pixels, admission 503, deadline 504, JSON errors counted in /metrics); the answer is encoded on the
inference pool, within the deadline, so a large map does not stall the event loop (/healthz).
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from lbdeploy.errors import InputError
from lbdeploy.runtime.admission import predict_whole_image, read_within
from lbdeploy.runtime.limits import check_work
from lbdeploy.runtime.saliency_results import saliency_png, saliency_to_json
from lbdeploy.runtime.schemas import image_request_body

SALIENCY_ENDPOINT = "/v1/saliency"
FORMATS = ("png", "json")
_PRESENT = {"png": saliency_png, "json": saliency_to_json}
_ENDPOINT_OF_TASK = {"pose": "/v1/pose", "saliency": SALIENCY_ENDPOINT}
_SALIENCY_BODY = {
    "requestBody": image_request_body({"format": {"type": "string", "enum": list(FORMATS)}}),
    "parameters": [{"name": "format", "in": "query", "required": False,
                    "schema": {"type": "string", "enum": list(FORMATS), "default": "png"}}],
}


class WrongTask(InputError):
    """The served model does not do what the endpoint asks (HTTP 404; the message names the right one)."""

    http_status = 404


def require_task(predictor, task: str, endpoint: str) -> None:
    """Refuse `endpoint` unless the served model's task is `task`.

    Raises:
        WrongTask: naming the endpoint that serves the model's task.
    """
    served = predictor.manifest.get("task", "pose")
    if served != task:
        hint = f"; POST the image to {_ENDPOINT_OF_TASK[served]}" if served in _ENDPOINT_OF_TASK else ""
        raise WrongTask(f"{endpoint} serves {task} models and this server serves a {served} model{hint}")


async def _read_saliency_request(request: Request) -> tuple[bytes, str]:
    """The image bytes and answer format of a raw-body or multipart request."""
    answer = request.query_params.get("format")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InputError("multipart requests need the image in a file field named 'file'")
        data = await upload.read()
        answer = form.get("format", answer)
    else:
        data = await request.body()
    answer = (answer or "png").strip().lower()
    if answer not in FORMATS:
        raise InputError(f"format must be one of {list(FORMATS)}, got {answer!r}")
    return data, answer


def add_saliency_routes(app: FastAPI, settings, dependencies: list) -> None:
    """Add POST /v1/saliency to `app` (runtime.server.create_app calls this).

    Args:
        app: the server's app (its state holds predictor, executor and admission).
        settings: the runtime.server.ServerSettings; dependencies: the token check.
    """

    @app.post(SALIENCY_ENDPOINT, dependencies=dependencies, openapi_extra=_SALIENCY_BODY,
              response_class=Response, summary="Saliency map of an image (PNG, or JSON statistics with format=json)")
    async def saliency(request: Request):
        predictor = request.app.state.predictor
        require_task(predictor, "saliency", SALIENCY_ENDPOINT)
        loop = asyncio.get_running_loop()
        with request.app.state.admission.slot():
            data, answer = await read_within(_read_saliency_request(request), settings.body_timeout_s)
            deadline = time.monotonic() + settings.timeout_s
            check_work(1, False, predictor.input_size, settings.limits)
            # encoding the answer (a PNG of up to max_pixels) is a pool job too: the event loop stays free
            body = await predict_whole_image(
                predictor, data, run=lambda job: loop.run_in_executor(request.app.state.executor, job),
                timeout_s=settings.timeout_s, deadline=deadline, present=_PRESENT[answer])
        if answer == "json":
            return JSONResponse(body)
        return Response(body, media_type="image/png")
