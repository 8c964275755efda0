"""The saliency endpoint of the server: POST /v1/saliency (added through the saliency record).

The request is the image as the raw body or the multipart field `file` (as /v1/pose);
`format=png` (default) answers the saliency map as an 8-bit grayscale PNG at the image's size,
`format=json` the statistics of saliency_to_json. The server's limits apply unchanged (body size,
pixels, admission 503, deadline 504, JSON errors counted in /metrics); the answer is encoded on the
inference pool, within the deadline, so a large map does not stall the event loop (/healthz). A
model of another task answers WrongTask (404).
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from lbdeploy.errors import InputError
from lbdeploy.runtime.admission import predict_whole_image, read_within
from lbdeploy.runtime.image_request import read_image_request
from lbdeploy.runtime.limits import check_work
from lbdeploy.runtime.schemas import image_request_body
from lbdeploy.runtime.tasks import require_task
from lbdeploy.runtime.tasks.saliency import saliency_png, saliency_to_json

SALIENCY_ENDPOINT = "/v1/saliency"
FORMATS = ("png", "json")
_PRESENT = {"png": saliency_png, "json": saliency_to_json}
_SALIENCY_BODY = {
    "requestBody": image_request_body({"format": {"type": "string", "enum": list(FORMATS)}}),
    "parameters": [{"name": "format", "in": "query", "required": False,
                    "schema": {"type": "string", "enum": list(FORMATS), "default": "png"}}],
}


async def _read_saliency_request(request: Request) -> tuple[bytes, str]:
    """The image bytes and the answer format of a raw-body or multipart request."""
    data, options = await read_image_request(request, ("format",))
    answer = (options["format"] or "png").strip().lower()
    if answer not in FORMATS:
        raise InputError(f"format must be one of {list(FORMATS)}, got {answer!r}")
    return data, answer


def add_saliency_routes(app: FastAPI, settings, dependencies: list) -> None:
    """Add POST /v1/saliency to `app`.

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
