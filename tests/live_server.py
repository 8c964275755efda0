"""A real HTTP server for tests: `lbdeploy serve`'s uvicorn setup (runtime.connections, its request-head
timeout included) serving lbdeploy's app on a free 127.0.0.1 port in a background thread.

    with LiveServer(artifact_or_factory, ServerSettings()) as live:
        live.client.post("/v1/pose", content=png)       # an httpx.Client on live.url
"""

import threading
import time

import httpx

from lbdeploy.runtime.connections import uvicorn_server
from lbdeploy.runtime.predictor import Predictor
from lbdeploy.runtime.server import create_app


class LiveServer:
    """`source` is an artifact folder (a pose Predictor) or a predictor factory."""

    def __init__(self, source, settings):
        factory = source if callable(source) else (lambda: Predictor(source))
        self.server, sockets = uvicorn_server(create_app(factory, settings), "127.0.0.1", 0,
                                              settings.header_timeout_s, log_level="warning")
        self.port = sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": sockets}, daemon=True)
        self.client = httpx.Client(base_url=self.url, timeout=300)  # a hang guard: requests take well under a second idle

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)
