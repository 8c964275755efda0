"""`lbdeploy serve --engine ray` as a user runs it: a real Ray instance in a subprocess. Ray's ports
stay on the loopback, SIGTERM/SIGINT let the requests in flight finish, and no Ray process
outlives the command."""

import concurrent.futures
import json
import re
import signal
import subprocess
import sys
import time

import pytest

from runtime_artifacts import dot_image, pool_manifest, pool_model, write_artifact
from test_server import REPO, _free_port, _png

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'lbdeploy[ray]')")
psutil = pytest.importorskip("psutil", reason="psutil is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")
grpc = pytest.importorskip("grpc", reason="grpcio is not installed (a Ray dependency)")

from lbdeploy.runtime.ray_serve import APP_NAME  # noqa: E402

IN_FLIGHT = 8  # requests in flight at the signal (the server admits 8 at once by default)
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def _wait_until(condition, seconds: float, what: str, process):
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"the server exited while waiting until {what}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _grpc_status(port: int):
    """Status of an unauthenticated call to Serve's replica gRPC service on `port`."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            channel.unary_unary("/ray.serve.ASGIService/HandleRequest")(b"", timeout=10)
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def _admitted(url: str) -> int:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return int(re.search(r"^lbdeploy_requests_admitted (\d+)$", text, re.M).group(1))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ray_engine_drains_on_signal_binds_loopback_and_leaves_no_process(tmp_path, signum):
    artifact = write_artifact(tmp_path / "a", pool_model(size=(256, 256)), pool_manifest(size=(256, 256)))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "serve.log", "wb")
    process = subprocess.Popen([sys.executable, "cli.py", "serve", str(artifact), "--engine", "ray", "--port", str(port),
                                "--workers", "1", "--timeout-s", "120"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    ray_processes = []
    try:
        _wait_until(lambda: _healthy(url), 180, "the Ray server answered /healthz", process)
        ray_processes = psutil.Process(process.pid).children(recursive=True)
        assert any("raylet" in p.name() for p in ray_processes)
        listening = {(p.name(), c.laddr.ip, c.laddr.port) for p in ray_processes
                     for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        assert ("127.0.0.1", port) in {(ip, p) for _, ip, p in listening}
        exposed = {entry for entry in listening if entry[1] not in LOOPBACK}
        # Ray 2.60 binds one port to all interfaces whatever the options: each Serve replica's
        # inter-deployment gRPC server ("[::]:0" in ray/serve/_private/replica.py). It must refuse
        # callers without Ray's cluster token.
        assert all(name.startswith(f"ray::ServeReplica:{APP_NAME}") for name, _, _ in exposed), exposed
        for _, _, exposed_port in exposed:
            assert _grpc_status(exposed_port) == grpc.StatusCode.UNAUTHENTICATED

        image = _png(dot_image(640, 480, {0: (300, 200), 1: (100, 400), 2: (500, 50)}))
        boxes = json.dumps([[(7 * i) % 600, (11 * i) % 440, 40, 40] for i in range(256)])
        with concurrent.futures.ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
            requests = [pool.submit(httpx.post, f"{url}/v1/pose", content=image, timeout=180,
                                    params={"boxes": boxes, "flip": "true"}) for _ in range(IN_FLIGHT)]
            _wait_until(lambda: _admitted(url) == IN_FLIGHT or any(r.done() for r in requests), 120,
                        "every request was admitted", process)
            assert not any(r.done() for r in requests), "a request finished before the signal; make them longer"
            process.send_signal(signum)
            answers = [r.result() for r in requests]
        assert [a.status_code for a in answers] == [200] * IN_FLIGHT
        assert all(len(a.json()["people"]) == 256 for a in answers)
        assert process.wait(timeout=120) == 0
        _, alive = psutil.wait_procs(ray_processes, timeout=30)
        assert alive == [], f"Ray processes outlived the command: {[p.name() for p in alive]}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        for leftover in ray_processes:
            if leftover.is_running():
                leftover.kill()
        log.close()
