"""Scale-out with Ray Serve: the same FastAPI app (runtime.server) on N replicas.

Each replica builds its own app, and so its own Predictor, thread pool and metrics, from a
picklable predictor factory; Ray Serve's proxy spreads requests over the replicas. The HTTP API,
limits and token are those of `lbdeploy serve` with uvicorn. Ray is an optional extra
(`pip install 'lbdeploy[ray]'`) imported only here.
"""

from __future__ import annotations

import os
from typing import Callable

from lbdeploy.errors import BackendUnavailable
from runtime.server import ServerSettings, create_app

APP_NAME = "lbdeploy-pose"


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

    @serve.deployment(name=APP_NAME, num_replicas=replicas, ray_actor_options={"num_cpus": 0})
    @serve.ingress()
    class PoseServer:
        """One replica: builds the FastAPI app (and its Predictor) on the replica."""

        def __init__(self, factory, server_settings):
            self.factory, self.settings = factory, server_settings

        def __serve_build_asgi_app__(self):
            return create_app(self.factory, self.settings)

    return PoseServer.bind(predictor_factory, settings)


def start(predictor_factory: Callable, host: str, port: int, settings: ServerSettings, replicas: int,
          num_cpus: int | None = None) -> None:
    """Start (or join, with RAY_ADDRESS) Ray, and deploy the app on http://host:port without blocking.

    Raises:
        BackendUnavailable: Ray Serve is not installed.
    """
    serve = _serve_module()
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), num_cpus=num_cpus, include_dashboard=False,
                 log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_application(predictor_factory, settings, replicas), name=APP_NAME, route_prefix="/")


def stop() -> None:
    """Remove the deployment and shut down Serve and this process's Ray connection."""
    serve = _serve_module()
    import ray

    serve.shutdown()
    ray.shutdown()


def serve_with_ray(predictor_factory: Callable, host: str, port: int, settings: ServerSettings, replicas: int) -> None:
    """Deploy with Ray Serve and block until Ctrl-C (what `lbdeploy serve --engine ray` runs)."""
    import threading

    import click

    start(predictor_factory, host, port, settings, replicas)
    click.echo(f"Serving on http://{host}:{port} with {replicas} Ray Serve replica(s); Ctrl-C stops", err=True)
    try:
        threading.Event().wait()
    finally:
        stop()
