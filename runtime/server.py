"""HTTP server: a FastAPI app around one predictor (served by uvicorn, or by Ray Serve).

Endpoints (OpenAPI at /docs and /openapi.json, behind the token like the others):
    every task's own endpoints (runtime.tasks: each task's record adds them):
      POST /v1/pose, /v1/pose/batch, /v1/heatmaps   pose (runtime/tasks/pose_routes.py)
      POST /v1/saliency                             saliency map PNG or JSON (saliency_routes.py)
      POST /v1/classify                             top-k classes JSON (classification_routes.py)
    an endpoint of another task than the served model's answers WrongTask (404, naming the right one);
    GET  /v1/model      manifest summary;  GET /healthz  liveness;  GET /metrics  Prometheus text

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

import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Callable

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from lbdeploy import __version__
from lbdeploy.artifact import summarize
from lbdeploy.errors import InputError, LbdeployError
from lbdeploy.transforms import DEFAULT_MAX_PIXELS
from lbdeploy.runtime.admission import Admission
from lbdeploy.runtime.connections import uvicorn_server
from lbdeploy.runtime.limits import RequestLimits
from lbdeploy.runtime.metrics import CONTENT_TYPE, ServerMetrics
from lbdeploy.runtime.tasks import RUNTIME_TASKS, runtime_task

DEFAULT_MAX_BODY_MB = 16.0
_ENDPOINTS = (*(path for record in RUNTIME_TASKS.values() for path in record.endpoints), "/v1/model", "/healthz",
              "/metrics", "/docs", "/openapi.json")
_LOG = logging.getLogger(__name__)
# Key in the ASGI scope's state under which an error response records its type for /metrics.
_ERROR_TYPE = "lbdeploy_error_type"


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


def create_app(predictor_factory: Callable, settings: ServerSettings | None = None) -> FastAPI:
    """Build the FastAPI app.

    Args:
        predictor_factory: called once at startup; returns the predictor of a task of runtime.tasks
            (e.g. runtime.tasks.PredictorOfTask(artifact)).
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

    app = FastAPI(title="lbdeploy server", version=__version__, lifespan=lifespan,
                  description="Pose estimation, saliency maps or classification with an exported LBRN artifact.",
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

    protected = [Depends(require_token)]

    @app.get("/openapi.json", dependencies=protected, include_in_schema=False)
    async def openapi():
        return JSONResponse(app.openapi())

    @app.get("/docs", dependencies=protected, include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @app.get("/v1/model", dependencies=protected, summary="What model is served and how it is fed")
    async def model(request: Request):
        predictor = request.app.state.predictor
        return {**summarize(predictor.manifest), **runtime_task(predictor.task.name).model_fields(predictor)}

    for record in RUNTIME_TASKS.values():
        record.add_routes(app, settings, protected)

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
