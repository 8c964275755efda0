"""A real HTTP server for tests: uvicorn serving lbdeploy's app on a free 127.0.0.1 port."""

import socket
import threading
import time

import httpx
import uvicorn

from lbdeploy.runtime.server import create_app


class LiveServer:
    """uvicorn serving `create_app(factory)` on a free 127.0.0.1 port in a background thread."""

    def __init__(self, factory, settings):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(factory, settings), host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return httpx.Client(base_url=self.url, timeout=30)

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


