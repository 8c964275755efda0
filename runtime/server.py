"""HTTP pose server: a FastAPI app around one Predictor (served by uvicorn, or by Ray Serve).

Endpoints (OpenAPI at /docs and /openapi.json, behind the token like the others):
    POST /v1/pose       image (raw body or multipart field "file") -> keypoints JSON
    POST /v1/pose/batch several images (multipart fields "files") -> {"model", "images": [...]}
    POST /v1/heatmaps   same input -> final heatmaps as .npy bytes ([N, J, h, w] float32)
    POST /v1/saliency   image -> saliency map PNG (or JSON statistics), for a saliency model
                        (runtime.saliency_server; the pose endpoints answer 404 for one)
    GET  /v1/model      manifest summary;  GET /healthz  liveness;  GET /metrics  Prometheus text

Person boxes come as JSON in the `boxes` query parameter (or form field): [[x, y, w, h], ...];
without them the Predictor's detector finds the people (each gets a "box" and an "id").
Safety limits: request bodies above `max_body_bytes` get 413 (checked on Content-Length and while
reading), images above `max_pixels` or thinner than 1:100 get 400, boxes that are not finite pixel
coordinates get 400, more boxes or crop pixels than `limits` allow get 413 (runtime.limits), more
than `max_pending` requests at once get 503. A body is read only once its request is admitted, and
must arrive within `body_timeout_s` (408); a request still running `timeout_s` after its body
arrived gets 504 and its work stops at the next deadline check (runtime.admission,
runtime.deadline). A connection must send its request head within `header_timeout_s`
(runtime.connections). With a token every endpoint but /healthz needs
`Authorization: Bearer <token>` (401 otherwise). Errors are JSON: {"error": {"type": ...,
"message": ...}}, each counted once by type in /metrics. Inference runs on a thread pool of
`workers` threads, so the event loop keeps answering while models run.

The app is built from a predictor *factory* and creates the predictor, thread pool and metrics on
startup, so the same app can be pickled to Ray Serve replicas (runtime.ray_serve).
"""

from __future__ import annotations

import asyncio
import hmac
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from lbdeploy import __version__
from lbdeploy.artifact import summarize
from lbdeploy.errors import InputError, LbdeployError
from lbdeploy.transforms import DEFAULT_MAX_PIXELS
from lbdeploy.runtime.admission import Admission, predict_in_batches, read_within
from lbdeploy.runtime.connections import uvicorn_server
from lbdeploy.runtime.limits import RequestLimits, check_work, parse_boxes_json
from lbdeploy.runtime.metrics import CONTENT_TYPE, ServerMetrics
from lbdeploy.runtime.results import pose_to_json
from lbdeploy.runtime.saliency_server import SALIENCY_ENDPOINT, add_saliency_routes, require_task
from lbdeploy.runtime.schemas import BatchPoses, ImagePoses, image_request_body

DEFAULT_MAX_BODY_MB = 16.0
_ENDPOINTS = ("/v1/pose", "/v1/pose/batch", "/v1/heatmaps", SALIENCY_ENDPOINT, "/v1/model", "/healthz", "/metrics",
              "/docs", "/openapi.json")
MAX_BATCH_IMAGES = 32
_LOG = logging.getLogger(__name__)
# Key in the ASGI scope's state under which an error response records its type for /metrics.
_ERROR_TYPE = "lbdeploy_error_type"
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


@dataclass
class ServerSettings:
    """Limits and options of the server.

    Attributes:
        token: bearer token required on every endpoint but /healthz (None: open).
        max_body_bytes: largest accepted request body.
        max_pixels: largest accepted image (width * height).
        timeout_s: per-request time limit (decoding and inference, from the body's arrival); the
            request stops past it.
        workers: inference threads.
        limits: per-request caps (boxes, crop pixels) and the batch size requests run in.
        max_pending: requests receiving their body, decoding or inferring at once (running or
            waiting for a thread); more get 503.
        body_timeout_s: seconds an admitted request has to send its whole body (408 past it).
        header_timeout_s: seconds a connection has to send its request line and headers (`serve`).
    """

    token: str | None = None
    max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * 1024 * 1024)
    max_pixels: int = DEFAULT_MAX_PIXELS
    timeout_s: float = 30.0
    workers: int = 1
    limits: RequestLimits = field(default_factory=RequestLimits)
    max_pending: int = 8
    body_timeout_s: float = 30.0
    header_timeout_s: float = 10.0


def _error(scope, status: int, kind: str, message: str, headers: dict | None = None) -> JSONResponse:
    """The JSON error response; records `kind` in the request's scope for the error metric."""
    scope.setdefault("state", {})[_ERROR_TYPE] = kind
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


class _BodyLimit:
    """ASGI middleware: 413 for bodies above the limit, by Content-Length or while streaming."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = _error(scope, 413, "PayloadTooLarge", f"request body of {int(declared)} bytes is above the "
                              f"limit of {self.max_bytes} bytes; send a smaller image")
            return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, f"request body is above the limit of {self.max_bytes} bytes; "
                                             "send a smaller image")
            return message

        await self.app(scope, limited_receive, send)


class _InternalErrors:
    """ASGI middleware: any other exception becomes a logged JSON 500 (InternalError); the
    connection stays usable (Starlette's own handler re-raises, so the server would drop it)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as err:
            _LOG.exception("request %s %s failed", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = _error(scope, 500, "InternalError",
                              f"the server failed on this request ({type(err).__name__}); see its log")
            await response(scope, receive, send)


class _Metrics:
    """ASGI middleware: request count, status and latency of every HTTP request, and the type of
    every error answered (the type an error response recorded, else InternalError / HTTPError)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}
        start = time.perf_counter()

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            metrics = getattr(scope["app"].state, "metrics", None) if "app" in scope else None
            if metrics is not None:
                endpoint = scope["path"] if scope["path"] in _ENDPOINTS else "other"
                metrics.observe(endpoint, status["code"], time.perf_counter() - start)
                if status["code"] >= 400:
                    default = "InternalError" if status["code"] >= 500 else "HTTPError"
                    metrics.error(endpoint, scope.get("state", {}).get(_ERROR_TYPE, default))


def _parse_flip(value) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no", ""):
        raise InputError(f"flip must be true or false, got {value!r}")
    return text in ("true", "1", "yes")


async def _read_request(request: Request) -> tuple[bytes, list | None, bool]:
    """The image bytes, boxes and flip flag of a raw-body or multipart request."""
    boxes, flip = request.query_params.get("boxes"), request.query_params.get("flip")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InputError("multipart requests need the image in a file field named 'file'")
        data = await upload.read()
        boxes = form.get("boxes", boxes)
        flip = form.get("flip", flip)
    else:
        data = await request.body()
    return data, parse_boxes_json(boxes), _parse_flip(flip)


async def _read_batch(request: Request) -> tuple[list[tuple[str, bytes]], bool]:
    """The (file name, bytes) of each image of a multipart batch request, and the flip flag."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InputError("send the images as multipart/form-data, one file field named 'files' per image")
    form = await request.form()
    uploads = form.getlist("files")
    if not uploads or any(isinstance(upload, str) for upload in uploads):
        raise InputError("a batch needs one or more image files in multipart fields named 'files'")
    if len(uploads) > MAX_BATCH_IMAGES:
        raise InputError(f"a batch holds at most {MAX_BATCH_IMAGES} images, got {len(uploads)}; split it")
    images = [(upload.filename or str(i), await upload.read()) for i, upload in enumerate(uploads)]
    return images, _parse_flip(form.get("flip", request.query_params.get("flip")))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def create_app(predictor_factory: Callable, settings: ServerSettings | None = None) -> FastAPI:
    """Build the FastAPI app.

    Args:
        predictor_factory: called once at startup; returns a runtime.predictor.Predictor (or a
            runtime.saliency.SaliencyPredictor for a saliency model).
        settings: limits and options (defaults: ServerSettings()).

    Returns:
        The FastAPI application (serve it with uvicorn or Ray Serve).
    """
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.metrics = ServerMetrics()
        app.state.predictor = predictor_factory()
        app.state.predictor.max_pixels = settings.max_pixels
        app.state.executor = ThreadPoolExecutor(max_workers=max(1, settings.workers), thread_name_prefix="lbdeploy-infer")
        app.state.admission = Admission(settings.max_pending)
        try:
            yield
        finally:
            app.state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="lbdeploy pose server", version=__version__, lifespan=lifespan,
                  description="Human pose estimation with an exported LBRN artifact.",
                  docs_url=None, redoc_url=None, openapi_url=None)  # served below, behind the token
    app.add_middleware(_BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(_InternalErrors)
    app.add_middleware(_Metrics)

    @app.exception_handler(LbdeployError)
    async def lbdeploy_error(request: Request, err: LbdeployError):
        status = getattr(err, "http_status", 400 if isinstance(err, InputError) else 500)
        return _error(request.scope, status, type(err).__name__, str(err), headers=getattr(err, "headers", None))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        kind = {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}.get(
            err.status_code, "HTTPError")
        return _error(request.scope, err.status_code, kind, str(err.detail), headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        return _error(request.scope, 422, "ValidationError", str(err.errors()))

    def require_token(request: Request) -> None:
        if settings.token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), settings.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})

    async def run_inference(request: Request, return_heatmaps: bool):
        predictor = request.app.state.predictor
        require_task(predictor, "pose", request.url.path)
        with request.app.state.admission.slot():
            data, boxes, flip = await read_within(_read_request(request), settings.body_timeout_s)
            deadline = time.monotonic() + settings.timeout_s
            check_work(len(boxes) if boxes else predictor.max_people, flip, predictor.input_size, settings.limits)
            return await _predict(request, data, boxes, flip, return_heatmaps, deadline)

    async def _predict(request: Request, data: bytes, boxes, flip: bool, return_heatmaps: bool, deadline: float):
        loop = asyncio.get_running_loop()
        return await predict_in_batches(
            request.app.state.predictor, data, boxes, flip, return_heatmaps,
            run=lambda job: loop.run_in_executor(request.app.state.executor, job),
            batch_crops=settings.limits.batch_crops, timeout_s=settings.timeout_s, deadline=deadline)

    protected = [Depends(require_token)]

    @app.get("/openapi.json", dependencies=protected, include_in_schema=False)
    async def openapi():
        return JSONResponse(app.openapi())

    @app.get("/docs", dependencies=protected, include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @app.post("/v1/pose", dependencies=protected, openapi_extra=_IMAGE_BODY, response_model=ImagePoses,
              response_model_exclude_unset=True, summary="Keypoints of the people in an image (COCO-style JSON)")
    async def pose(request: Request):
        result = await run_inference(request, return_heatmaps=False)
        predictor = request.app.state.predictor
        return pose_to_json(result, predictor.joint_names, predictor.skeleton)

    @app.post("/v1/pose/batch", dependencies=protected, openapi_extra=_BATCH_BODY, response_model=BatchPoses,
              response_model_exclude_unset=True, summary="Keypoints of the people in each of several images")
    async def pose_batch(request: Request):
        predictor = request.app.state.predictor
        require_task(predictor, "pose", request.url.path)
        with request.app.state.admission.slot():
            images, flip = await read_within(_read_batch(request), settings.body_timeout_s)
            deadline = time.monotonic() + settings.timeout_s
            # the images run one after the other, so the caps hold per image (the detector's people)
            check_work(predictor.max_people, flip, predictor.input_size, settings.limits)
            results = [await _predict(request, data, None, flip, False, deadline) for _, data in images]
        return {"model": predictor.manifest.get("arch"),
                "images": [pose_to_json(result, predictor.joint_names, predictor.skeleton, image_id=name)
                           for (name, _), result in zip(images, results)]}

    @app.post("/v1/heatmaps", dependencies=protected, openapi_extra=_IMAGE_BODY,
              response_class=Response, summary="Final heatmaps as a .npy float32 [N, J, h, w] array")
    async def heatmaps(request: Request):
        result = await run_inference(request, return_heatmaps=True)
        # up to max_boxes x J x h x w floats: serialized on the pool, not on the event loop
        body = await asyncio.get_running_loop().run_in_executor(request.app.state.executor, _npy_bytes, result.heatmaps)
        return Response(body, media_type="application/octet-stream",
                        headers={"Content-Disposition": 'attachment; filename="heatmaps.npy"'})

    @app.get("/v1/model", dependencies=protected, summary="What model is served and how it is fed")
    async def model(request: Request):
        predictor = request.app.state.predictor
        pose = predictor.manifest.get("task", "pose") == "pose"
        return {**summarize(predictor.manifest), **({"joint_names": predictor.joint_names} if pose else {})}

    add_saliency_routes(app, settings, protected)

    @app.get("/healthz", summary="Liveness: 200 once the model is loaded")
    async def healthz():
        return {"status": "ok"}

    @app.get("/metrics", dependencies=protected, response_class=Response, summary="Prometheus metrics")
    async def metrics(request: Request):
        state = request.app.state
        return Response(state.metrics.render(admitted=state.admission.active), media_type=CONTENT_TYPE)

    return app


def serve(predictor_factory: Callable, host: str, port: int, settings: ServerSettings, log_level: str = "info",
          announce: Callable[[str], None] | None = None) -> None:
    """Run the app with uvicorn in this process until interrupted.

    `announce(url)` is called once the port is bound (e.g. to print where the server listens).

    Raises:
        runtime.connections.AddressUnavailable: the port is in use or the host is not local
            (before anything is served).
    """
    server, sockets = uvicorn_server(create_app(predictor_factory, settings), host, port, settings.header_timeout_s,
                                     log_level)
    if announce is not None:
        announce(f"http://{host}:{sockets[0].getsockname()[1]}")
    server.run(sockets=sockets)
