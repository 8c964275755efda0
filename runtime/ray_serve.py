"""Scale-out with Ray Serve: the same FastAPI app (runtime.server) on N replicas.

Each replica builds its own app, and so its own Predictor, thread pool and metrics, from a
picklable predictor factory; Ray Serve's proxy spreads requests over the replicas. The HTTP API,
limits and token are those of `lbdeploy serve` with uvicorn. Ray is an optional extra
(`pip install 'lbdeploy[ray]'`) imported only here.

Exposure: without RAY_ADDRESS, `start` runs a one-machine Ray instance of its own whose node
address is the loopback (`LOCAL_RAY_ENV`), so Ray's internal ports (GCS, raylet, dashboard and
runtime-env agents, Serve's controller) listen on 127.0.0.1 only; Ray's dashboard and its
Prometheus metrics port are off. Only Serve's HTTP proxy binds the given host. Shutdown: `stop`
deletes the application first, so each replica finishes its in-flight requests (up to the request
timeout plus `DRAIN_MARGIN_S`), then stops Serve and every Ray process that `start` launched.
`serve_with_ray` does that on SIGTERM or SIGINT (a second signal skips the wait).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable

from lbdeploy.errors import BackendUnavailable
from lbdeploy.runtime.server import ServerSettings, create_app

APP_NAME = "lbdeploy-pose"
# Seconds a replica may spend finishing its requests at shutdown beyond the request timeout.
DRAIN_MARGIN_S = 10.0
# Requests a replica takes beyond the app's own inference admission (`max_pending`): /healthz,
# /metrics, /v1/model and the 503 answers; Serve queues (and routes) only past that.
LIGHT_REQUESTS = 32
# Environment of a Ray instance started here, set before `import ray` (they are read at import):
# a one-machine instance whose node address is 127.0.0.1 (Ray's laptop mode, also on Linux), and
# no metrics agent exporting Ray's own Prometheus metrics.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_enable_metrics_collection": "0"}


def _serve_module():
    try:
        from ray import serve
    except ImportError as err:
        raise BackendUnavailable("Ray Serve is not installed; pip install 'lbdeploy[ray]'") from err
    return serve


def build_application(predictor_factory: Callable, settings: ServerSettings, replicas: int):
    """A bound Ray Serve application serving `create_app(predictor_factory, settings)`.

    Args:
        predictor_factory: picklable callable returning a Predictor (called once per replica).
        settings: server limits and options.
        replicas: number of replicas.

    Returns:
        The bound deployment, ready for `serve.run`.
    """
    serve = _serve_module()

    @serve.deployment(name=APP_NAME, num_replicas=replicas, ray_actor_options={"num_cpus": 0},
                      graceful_shutdown_timeout_s=settings.timeout_s + DRAIN_MARGIN_S,
                      graceful_shutdown_wait_loop_s=0.5,
                      max_ongoing_requests=settings.max_pending + LIGHT_REQUESTS)
    @serve.ingress()
    class PoseServer:
        """One replica: builds the FastAPI app (and its Predictor) on the replica."""

        def __init__(self, factory, server_settings):
            self.factory, self.settings = factory, server_settings

        def __serve_build_asgi_app__(self):
            return create_app(self.factory, self.settings)

    return PoseServer.bind(predictor_factory, settings)


def start(predictor_factory: Callable, host: str, port: int, settings: ServerSettings, replicas: int,
          num_cpus: int | None = None, on_signal: Callable | None = None) -> bool:
    """Start a local Ray instance (or join the one of RAY_ADDRESS, or use this process's), and
    deploy the app on http://host:port without blocking.

    A local instance gets `LOCAL_RAY_ENV` when Ray is not imported yet (as in `lbdeploy serve`).

    Args:
        on_signal: a handler for SIGTERM and SIGINT, installed right after `ray.init` (which
            installs its own) and so before the app is reachable (None: leave the handlers).

    Returns:
        True when this call started the Ray instance: `stop(True)` then shuts it down.

    Raises:
        BackendUnavailable: Ray Serve is not installed.
    """
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        for name, value in LOCAL_RAY_ENV.items():
            os.environ.setdefault(name, value)
    serve = _serve_module()
    import ray

    owned = False
    if not ray.is_initialized():
        ray.init(address=address or "local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        owned = not address
    for signum in (signal.SIGTERM, signal.SIGINT) if on_signal else ():
        signal.signal(signum, on_signal)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_application(predictor_factory, settings, replicas), name=APP_NAME, route_prefix="/")
    except BaseException:
        stop(owned)
        raise
    return owned


def stop(owned: bool) -> None:
    """Delete the app once its replicas have finished their in-flight requests; then, when `start`
    started the Ray instance (`owned`), stop Serve and every Ray process; always disconnect."""
    serve = _serve_module()
    import ray

    try:
        if ray.is_initialized():
            serve.delete(APP_NAME)
            if owned:
                serve.shutdown()
    finally:
        ray.shutdown()


def serve_with_ray(predictor_factory: Callable, host: str, port: int, settings: ServerSettings, replicas: int) -> None:
    """Deploy with Ray Serve and block until SIGTERM or SIGINT, then drain and stop (what
    `lbdeploy serve --engine ray` runs). A second signal stops without waiting for requests."""
    import click

    requested = threading.Event()

    def on_signal(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    owned = start(predictor_factory, host, port, settings, replicas, on_signal=on_signal)
    try:
        click.echo(f"Serving on http://{host}:{port} with {replicas} Ray Serve replica(s); Ctrl-C stops", err=True)
        requested.wait()
        click.echo("Stopping: finishing the requests in flight (Ctrl-C again to skip)", err=True)
    finally:
        stop(owned)
