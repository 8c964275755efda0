"""The classification endpoint of the server: POST /v1/classify (added through the classification record).

The image comes as the raw body or the multipart field `file`; `top_k` (1..classes, default 5)
says how many classes to answer, most likely first (classification_to_json). The server's limits
apply unchanged (the body is read once admitted, within `body_timeout_s`; the deadline runs from
its arrival); a model of another task answers WrongTask (404).
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI, Request

from lbdeploy.errors import InputError
from lbdeploy.runtime.admission import predict_whole_image, read_within
from lbdeploy.runtime.image_request import read_image_request
from lbdeploy.runtime.limits import check_work
from lbdeploy.runtime.schemas import image_request_body
from lbdeploy.runtime.tasks import require_task
from lbdeploy.runtime.tasks.classification import TOP_K, classification_to_json

CLASSIFY_ENDPOINT = "/v1/classify"
_CLASSIFY_BODY = {
    "requestBody": image_request_body({"top_k": {"type": "integer", "minimum": 1}}),
    "parameters": [{"name": "top_k", "in": "query", "required": False,
                    "schema": {"type": "integer", "minimum": 1, "default": TOP_K}}],
}


def _top_k(value, classes: int) -> int:
    """`top_k` as an integer in 1..classes (default TOP_K, at most classes); InputError otherwise."""
    if value is None or str(value).strip() == "":
        return min(TOP_K, classes)
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= classes:
        raise InputError(f"top_k must be an integer from 1 to {classes}, got {value!r}")
    return int(text)


def add_classification_routes(app: FastAPI, settings, dependencies: list) -> None:
    """Add POST /v1/classify to `app`.

    Args:
        app: the server's app (its state holds predictor, executor and admission).
        settings: the runtime.server.ServerSettings; dependencies: the token check.
    """

    @app.post(CLASSIFY_ENDPOINT, dependencies=dependencies, openapi_extra=_CLASSIFY_BODY,
              summary="The most likely classes of an image (JSON)")
    async def classify(request: Request):
        predictor = request.app.state.predictor
        require_task(predictor, "classification", CLASSIFY_ENDPOINT)
        loop = asyncio.get_running_loop()
        with request.app.state.admission.slot():
            data, options = await read_within(read_image_request(request, ("top_k",)), settings.body_timeout_s)
            deadline = time.monotonic() + settings.timeout_s
            top_k = _top_k(options["top_k"], len(predictor.labels))
            check_work(1, False, predictor.input_size, settings.limits)
            return await predict_whole_image(
                predictor, data, run=lambda job: loop.run_in_executor(request.app.state.executor, job),
                timeout_s=settings.timeout_s, deadline=deadline,
                present=lambda result: classification_to_json(result, top_k=top_k))
