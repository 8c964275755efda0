"""Cheap requests that must not stall the server: thin images, images whose detector work outlives
the deadline, large saliency maps, slow bodies, partial headers, a full batch, a port in use, and
all of them at once (the fault-injection test). Live servers on 127.0.0.1 only: uvicorn threads in
this process (their memory is this process's RSS, sampled by psutil) and `lbdeploy serve`
subprocesses. Time bounds here are hang guards (10x or more of the idle time), never speed checks.
"""

import concurrent.futures
import io
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image, ImageDraw

from runtime_artifacts import dot_image, pool_manifest, pool_model, write_artifact
from test_server import REPO, _free_port, _LiveServer, _png

psutil = pytest.importorskip("psutil", reason="psutil is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")
pytest.importorskip("cv2", reason="the hog detector needs opencv-python-headless")

from lbdeploy.errors import InputError  # noqa: E402
from lbdeploy.runtime.deadline import DeadlineExceeded, check_deadline, run_until  # noqa: E402
from lbdeploy.runtime.detection import HogDetector  # noqa: E402
from lbdeploy.runtime.predictor import Predictor  # noqa: E402
from lbdeploy.runtime.predictor import SaliencyPredictor  # noqa: E402
from lbdeploy.runtime.server import ServerSettings  # noqa: E402

IMAGE = _png(dot_image(120, 90, {0: (30, 40), 1: (90, 20), 2: (60, 70)}))
HANG_GUARD_S = 120  # "answered at all": far above any idle answer time here
RSS_GROWTH_MB = 200  # thin images: before the aspect bound, 3000x1 alone took +860 MB in HOG
SLOW_BODY_RSS_MB = 60  # 30 slow 3.5 MB bodies: about 105 MB (+ copies) when read before admission


def _png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _thin_png(width: int, height: int) -> bytes:
    return _png_of(Image.new("1", (width, height)))  # 1 bit per pixel: 40,000,000x1 is a 5 MB image, a 39 KB PNG


def _large_png(side: int) -> bytes:
    """A side x side grayscale PNG of a few hundred kB: under the 40 M pixel cap, heavy to process."""
    image = Image.new("L", (side, side), 90)
    draw = ImageDraw.Draw(image)
    for i in range(0, side, side // 8):
        draw.rectangle([i, i // 2, i + side // 16, i // 2 + side // 3], fill=200)
    return _png_of(image)


class _PeakRss:
    """Largest RSS of a process while the `with` block runs (sampled every 5 ms)."""

    def __init__(self, pid: int):
        self.process, self.peak, self.baseline = psutil.Process(pid), 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self):
        self.baseline = self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 2**20


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return write_artifact(tmp_path_factory.mktemp("pool"), pool_model(), pool_manifest())


def _hog(artifact):
    return lambda: Predictor(artifact, detector="hog")


# --- thin images (aspect ratio, intermediate images) -----------------------------------------------

@pytest.fixture(scope="module")
def hog_server(artifact):
    with _LiveServer(_hog(artifact), ServerSettings(workers=1)) as live:
        yield live


@pytest.mark.parametrize("size", [(3000, 1), (1, 3000), (40_000_000, 1)], ids=["3000x1", "1x3000", "40000000x1"])
def test_thin_images_get_a_400_without_work(hog_server, size):
    data = _thin_png(*size)
    with httpx.Client(base_url=hog_server.url, timeout=HANG_GUARD_S) as session, _PeakRss(psutil.Process().pid) as rss:
        response = session.post("/v1/pose", content=data)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "InputError"
    assert "thinner than 1:100" in response.json()["error"]["message"]
    assert rss.growth_mb < RSS_GROWTH_MB, f"the server grew by {rss.growth_mb:.0f} MB"


def test_load_image_bounds_the_aspect_ratio():
    from lbdeploy.transforms import load_image

    assert load_image(np.zeros((1, 100, 3), np.uint8)).shape == (1, 100, 3)  # 1:100 is the limit
    for shape in [(1, 101, 3), (101, 1, 3)]:
        with pytest.raises(InputError, match="thinner than 1:100"):
            load_image(np.zeros(shape, np.uint8))
    with pytest.raises(InputError, match="is 101x1 pixels, thinner than 1:100"):
        load_image(_thin_png(101, 1))


def test_the_detector_bounds_its_enlarged_image():
    """Called directly on an array (no decoding bound), HOG refuses to enlarge 3000x1 to 384000x128."""
    with pytest.raises(InputError, match="enlarged to the HOG window is 384000x128"):
        HogDetector().detect(np.zeros((1, 3000, 3), np.uint8))
    boxes, _ = HogDetector().detect(np.zeros((40, 100, 3), np.uint8))  # enlarged 3.2x: fine
    assert boxes.shape == (0, 4)


# --- a 504 stops whole-image work ------------------------------------------------------------------

def test_hog_stops_between_pyramid_levels_past_the_deadline():
    image = np.zeros((1000, 1000, 3), np.uint8)  # about 40 levels; the deadline passes during the first
    with pytest.raises(DeadlineExceeded, match="longer than 0.05 s"):
        run_until(lambda: HogDetector().detect(image), time.monotonic() + 0.05, 0.05)
    check_deadline()  # outside run_until (the CLI, the Python API) there is no deadline
    assert HogDetector().detect(image)[0].shape == (0, 4)


def test_a_504_stops_the_detector_so_the_next_request_is_answered(artifact):
    # HOG's pyramid over 6300x6300 pixels takes about a minute here; the request gets 504 at 10 s.
    # Its work must stop within one pyramid level, so a normal request sent after the 504 is
    # served within its own 10 s (one retry allowed for a slow level on a busy machine). Before,
    # the pyramid ran on and normal requests got 504 for about a minute more.
    big = _large_png(6300)
    with _LiveServer(_hog(artifact), ServerSettings(workers=1, timeout_s=10)) as live, \
            httpx.Client(base_url=live.url, timeout=HANG_GUARD_S) as session:
        late = session.post("/v1/pose", content=big)
        assert late.status_code == 504 and late.json()["error"]["type"] == "DeadlineExceeded"
        statuses = []
        for _ in range(2):
            statuses.append(session.post("/v1/pose", content=IMAGE).status_code)
            if statuses[-1] == 200:
                break
        assert statuses[-1] == 200, f"normal requests after the 504 got {statuses}"


# --- the saliency map is encoded off the event loop ------------------------------------------------

STALL_BOUND_S = 2.0  # /healthz answers in milliseconds; the map's PNG encoding here takes several seconds


def _saliency_artifact(folder):
    """image [N, 3, 64, 64] -> saliency [N, 1, 64, 64] = mean of the channels (no torch needed)."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image", "axes"], ["saliency"], keepdims=1)], "mean_saliency",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("saliency", TensorProto.FLOAT, ["N", 1, 64, 64])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    manifest = {**pool_manifest(), "arch": "mean-saliency", "task": "saliency",
                "outputs": [{"name": "saliency", "shape": ["N", 1, 64, 64], "final": True}],
                "saliency": {"output_activation": "sigmoid"},
                "input": {**pool_manifest()["input"], "mean": [0.5, 0.5, 0.5], "std": [0.05, 0.05, 0.05]}}
    del manifest["pose"]
    return write_artifact(folder, model, manifest)


def test_saliency_encoding_keeps_healthz_responsive(tmp_path):
    artifact = _saliency_artifact(tmp_path / "saliency")
    big = _large_png(6300)
    with _LiveServer(lambda: SaliencyPredictor(artifact), ServerSettings(workers=1, timeout_s=300)) as live, \
            httpx.Client(base_url=live.url, timeout=HANG_GUARD_S) as session, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        thin = session.post("/v1/saliency", content=_thin_png(40_000_000, 1))
        assert thin.status_code == 400 and "thinner" in thin.json()["error"]["message"]
        answer = pool.submit(session.post, "/v1/saliency", content=big)
        latencies = []
        with httpx.Client(base_url=live.url, timeout=HANG_GUARD_S) as probe:
            for _ in range(20_000):  # bounded: ends with the answer
                if answer.done():
                    break
                start = time.monotonic()
                assert probe.get("/healthz").status_code == 200
                latencies.append(time.monotonic() - start)
                time.sleep(0.02)
        response = answer.result()
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (6300, 6300)
    assert len(latencies) > 10 and max(latencies) < STALL_BOUND_S, f"/healthz stalled {max(latencies):.1f} s"


# --- bodies: read after admission, within a time limit; request heads within a time limit ----------

def _slow_body(port: int, length: int, payload: bytes) -> socket.socket:
    """A POST /v1/pose announcing `length` bytes that sends the payload (as far as the server reads) and stalls."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"POST /v1/pose HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                 f"Content-Length: {length}\r\n\r\n".encode())
    sock.settimeout(0.1)
    try:
        sock.sendall(payload)
    except OSError:  # the server stopped reading (not admitted): the kernel buffers are full, or it answered
        pass
    return sock


def _status(sock: socket.socket, timeout: float) -> int | None:
    """The status code of the response on `sock` (None: closed without one, or none within `timeout`)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    finally:
        sock.close()
    return int(data.split()[1]) if data.startswith(b"HTTP/1.1 ") else None


def test_slow_bodies_are_admitted_first_bounded_and_timed_out(artifact):
    # the body timeout outlasts opening the 30 connections (0.1 s each at most), so exactly two are admitted
    settings = ServerSettings(workers=1, max_pending=2, body_timeout_s=6.0, max_body_bytes=4_000_000)
    payload = b"\0" * 3_500_000
    with _LiveServer(artifact, settings) as live:
        with _PeakRss(psutil.Process().pid) as rss:
            sockets = [_slow_body(live.port, 4_000_000, payload) for _ in range(30)]
            guard = time.monotonic() + HANG_GUARD_S  # one hang guard for all of them
            statuses = [_status(sock, max(0.1, guard - time.monotonic())) for sock in sockets]
        assert rss.growth_mb < SLOW_BODY_RSS_MB, f"the server grew by {rss.growth_mb:.0f} MB"
        # two admitted bodies time out (408), the others are refused before their body is read (503)
        assert sorted(statuses) == [408] * 2 + [503] * 28, statuses
        with httpx.Client(base_url=live.url, timeout=HANG_GUARD_S) as session:
            assert session.post("/v1/pose", content=IMAGE).status_code == 200


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except OSError:  # timed out: still open
        return False
    finally:
        sock.close()


def test_partial_request_heads_are_closed(artifact):
    with _LiveServer(artifact, ServerSettings(header_timeout_s=1.0)) as live:
        partial = []
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", live.port), timeout=5)
            sock.sendall(b"POST /v1/pose HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")  # and nothing more
            partial.append(sock)
        # a keep-alive connection: one full request, then a partial head (uvicorn's keep-alive
        # timer stops at the first byte, so only the head timeout closes it)
        kept = socket.create_connection(("127.0.0.1", live.port), timeout=5)
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET /heal")
        partial.append(kept)
        guard = time.monotonic() + 10.0  # 10x the head timeout, for all of them
        closed = [_closed_by_server(sock, max(0.1, guard - time.monotonic())) for sock in partial]
        assert all(closed), f"{closed.count(False)} of {len(closed)} connections with a partial head stayed open"
        with httpx.Client(base_url=live.url, timeout=HANG_GUARD_S) as session:  # a normal request is unaffected
            assert session.post("/v1/pose", content=IMAGE).status_code == 200


# --- a full batch with the default detector settings -----------------------------------------------

def test_a_batch_of_32_images_works_with_the_detector_defaults(artifact):
    images = [_png(dot_image(64 + i, 128, {i % 3: (20, 60)})) for i in range(32)]
    with _LiveServer(_hog(artifact), ServerSettings()) as live, \
            httpx.Client(base_url=live.url, timeout=HANG_GUARD_S) as session:
        response = session.post("/v1/pose/batch", files=[("files", (f"{i}.png", data, "image/png"))
                                                         for i, data in enumerate(images)])
        assert response.status_code == 200, response.text
        assert [entry["image_id"] for entry in response.json()["images"]] == [f"{i}.png" for i in range(32)]
        too_many = session.post("/v1/pose/batch", files=[("files", ("x.png", images[0], "image/png"))] * 33)
        assert too_many.status_code == 400 and "at most 32" in too_many.json()["error"]["message"]


# --- `lbdeploy serve` on a port in use -------------------------------------------------------------

def test_serve_on_a_port_in_use_exits_2_with_one_line(artifact):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "lbdeploy.cli", "serve", str(artifact), "--port", str(port),
                                 "--detector", "none"], cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: cannot listen on 127.0.0.1:") and str(port) in lines[0]
    assert "in use" in lines[0] and "--port" in lines[0]


# --- fault injection: all of it at once against `lbdeploy serve` -----------------------------------

FAULT_SECONDS = 20  # how long the hostile clients run
FAULT_P99_BOUND_S = 10.0  # valid requests: idle ~0.05 s here; 10 s is the server's own --timeout-s
FAULT_RSS_GROWTH_MB = 500  # server RSS growth: 2 workers x (a 4 Mpx image and its copies) + bodies


def _declared_png(width: int, height: int) -> bytes:
    """A PNG header declaring width x height pixels with no image data: a decompression bomb's promise."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


class _Clients:
    """Hostile and valid clients in threads until `seconds` pass; every loop is bounded in count too."""

    def __init__(self, port: int, seconds: float):
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        self.until = time.monotonic() + seconds
        self.statuses: dict[str, list] = {}
        self.latencies: list[float] = []
        self.heads: list[socket.socket] = []

    def _rounds(self, count: int = 2000):
        for i in range(count):
            if time.monotonic() >= self.until:
                return
            yield i

    def _post(self, kind: str, session, data: bytes) -> float:
        start = time.monotonic()
        try:
            status = session.post("/v1/pose", content=data).status_code
        except httpx.HTTPError as err:  # the server may close a connection whose body it refused
            status = type(err).__name__
        self.statuses.setdefault(kind, []).append(status)
        return time.monotonic() - start

    def valid(self):
        with httpx.Client(base_url=self.url, timeout=HANG_GUARD_S) as session:
            for _ in self._rounds():
                self.latencies.append(self._post("valid", session, IMAGE))

    def bombs(self):
        payloads = [_declared_png(50_000, 50_000), _declared_png(2**31 - 1, 1), _large_png(6300),
                    _thin_png(2000, 2000), b"\0" * 2_000_000]  # the last two: a 4 Mpx image of 4 kB, a 413
        with httpx.Client(base_url=self.url, timeout=HANG_GUARD_S) as session:
            for i in self._rounds():
                self._post("bombs", session, payloads[i % len(payloads)])

    def thin(self):
        payloads = [_thin_png(3000, 1), _thin_png(1, 3000), _thin_png(40_000_000, 1)]
        with httpx.Client(base_url=self.url, timeout=HANG_GUARD_S) as session:
            for i in self._rounds():
                self._post("thin", session, payloads[i % len(payloads)])

    def slow_bodies(self):
        for _ in self._rounds(200):
            sockets = [_slow_body(self.port, 900_000, b"\0" * 10_000) for _ in range(2)]
            self.statuses.setdefault("slow", []).extend(_status(sock, HANG_GUARD_S) for sock in sockets)

    def partial_heads(self):
        for _ in self._rounds(200):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(b"POST /v1/pose HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10")
            self.heads.append(sock)
            time.sleep(0.05)


def test_fault_injection_keeps_valid_requests_answered(artifact, tmp_path):
    port = _free_port()
    log = open(tmp_path / "serve.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "lbdeploy.cli", "serve", str(artifact), "--port", str(port), "--detector", "hog",
         "--workers", "2", "--max-body-mb", "1", "--max-pixels", "4000000", "--timeout-s", "10",
         "--body-timeout-s", "2", "--header-timeout-s", "2"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):  # up to 60 s to start
            try:
                httpx.get(f"{url}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
        assert httpx.post(f"{url}/v1/pose", content=IMAGE, timeout=HANG_GUARD_S).status_code == 200  # warm up
        clients = _Clients(port, FAULT_SECONDS)
        roles = [clients.valid, clients.valid, clients.bombs, clients.thin, clients.slow_bodies, clients.partial_heads]
        with _PeakRss(process.pid) as rss, concurrent.futures.ThreadPoolExecutor(max_workers=len(roles)) as pool:
            for done in [pool.submit(role) for role in roles]:
                done.result()
        guard = time.monotonic() + 20.0  # 10x the head timeout
        heads_open = [not _closed_by_server(sock, max(0.1, guard - time.monotonic())) for sock in clients.heads]
        alive = httpx.get(f"{url}/healthz", timeout=HANG_GUARD_S).status_code
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    statuses = clients.statuses
    everything = [status for kind in statuses.values() for status in kind]
    assert 500 not in everything, {kind: sorted(set(map(str, s))) for kind, s in statuses.items()}
    assert len(statuses["valid"]) >= 10 and set(statuses["valid"]) == {200}, sorted(set(map(str, statuses["valid"])))
    p99 = float(np.percentile(clients.latencies, 99))
    assert p99 < FAULT_P99_BOUND_S, f"valid requests' p99 latency was {p99:.1f} s"
    assert set(statuses["thin"]) == {400}
    assert set(statuses["bombs"]) <= {200, 400, 413, 504, "WriteError", "ReadError", "RemoteProtocolError"}
    assert 400 in statuses["bombs"] and 413 in statuses["bombs"]
    assert set(statuses["slow"]) <= {408, 503} and 408 in statuses["slow"]
    assert clients.heads and not any(heads_open), f"{sum(heads_open)} connections with partial heads stayed open"
    assert rss.growth_mb < FAULT_RSS_GROWTH_MB, f"the server grew by {rss.growth_mb:.0f} MB"
    assert alive == 200
