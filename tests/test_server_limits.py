"""Server limits that hold: per-request caps, absurd numbers, admission control, deadlines, error
metrics and the token on the docs, against live uvicorn servers on 127.0.0.1 (threads in this
process, and one `lbdeploy.runtime.server.serve` subprocess whose memory is measured with psutil)."""

import concurrent.futures
import io
import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from runtime_artifacts import dot_image, pool_manifest, pool_model, write_artifact
from test_server import AUTH, REPO, TOKEN, _free_port, _LiveServer, _png

psutil = pytest.importorskip("psutil", reason="psutil is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from lbdeploy.runtime.limits import RequestLimits  # noqa: E402
from lbdeploy.runtime.predictor import Predictor  # noqa: E402
from lbdeploy.runtime.tasks.pose import pose_to_json  # noqa: E402
from lbdeploy.runtime.server import ServerSettings  # noqa: E402

INPUT = 64  # pool model input side
LIMITS = RequestLimits(max_boxes=5, max_crop_pixels=6 * INPUT * INPUT, batch_crops=4)
IMAGE = _png(dot_image(120, 90, {0: (30, 40), 1: (90, 20), 2: (60, 70)}))
# Peak RSS growth allowed to the server while it answers 1,000 boxes with flip on a 256x256 model.
# Unbatched, the 2,000 crops alone take 1.5 GB as float32 model input.
RSS_BOUND_MB = 300
ANSWER_BOUND_S = 60  # a generous "answered at all" bound for a small request next to a big one


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return write_artifact(tmp_path_factory.mktemp("pool"), pool_model(), pool_manifest())


@pytest.fixture(scope="module")
def server(artifact):
    settings = ServerSettings(token=TOKEN, max_body_bytes=300_000, timeout_s=30, workers=2, limits=LIMITS)
    with _LiveServer(artifact, settings) as live:
        yield live


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as session:
        yield session


def _errors(client) -> dict:
    """{(endpoint, type): count} of lbdeploy_errors_total."""
    text = client.get("/metrics").text
    return {(e, t): float(v) for e, t, v in re.findall(r'^lbdeploy_errors_total\{endpoint="([^"]*)",type="([^"]*)"\} (\S+)$',
                                                      text, re.M)}


def _counted_once(before: dict, after: dict, key) -> bool:
    """Exactly one error more, of type key, and no other error counted (the /metrics reads are not errors)."""
    grown = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    return grown == {key: 1}


def _admitted(client) -> int:
    return int(re.search(r"^lbdeploy_requests_admitted (\d+)$", client.get("/metrics").text, re.M).group(1))


def _boxes(n: int) -> list:
    return [[5 + i % 50, 5 + i % 40, 40, 50] for i in range(n)]


def test_batched_requests_answer_like_the_python_api(client, artifact):
    boxes = _boxes(5)  # batches of 4 crops: 3 boxes with flip run as 2 + 1 people, 5 boxes as 4 + 1
    response = client.post("/v1/pose", content=IMAGE, params={"boxes": json.dumps(boxes[:3]), "flip": "true"})
    assert response.status_code == 200, response.text
    predictor = Predictor(artifact)
    expected = predictor.predict(IMAGE, boxes=boxes[:3], flip=True)
    assert response.json() == pose_to_json(expected, predictor.joint_names, predictor.skeleton)
    response = client.post("/v1/pose", content=IMAGE, params={"boxes": json.dumps(boxes)})
    assert response.json() == pose_to_json(predictor.predict(IMAGE, boxes=boxes), predictor.joint_names,
                                           predictor.skeleton)
    heatmaps = client.post("/v1/heatmaps", content=IMAGE, params={"boxes": json.dumps(boxes)})
    np.testing.assert_array_equal(np.load(io.BytesIO(heatmaps.content)),
                                  predictor.predict(IMAGE, boxes=boxes, return_heatmaps=True).heatmaps)


@pytest.mark.parametrize("boxes, flip", [(_boxes(6), False), (_boxes(4), True)], ids=["too-many-boxes", "flip-doubles"])
def test_work_over_the_caps_gets_413_counted_once(client, boxes, flip):
    before = _errors(client)
    response = client.post("/v1/pose", content=IMAGE, params={"boxes": json.dumps(boxes), "flip": str(flip).lower()})
    assert response.status_code == 413 and response.json()["error"]["type"] == "LimitExceeded"
    assert ("flip" in response.json()["error"]["message"]) == flip
    assert _counted_once(before, _errors(client), ("/v1/pose", "LimitExceeded"))
    if flip:  # the same boxes without flip are within the crop-pixel cap
        assert client.post("/v1/pose", content=IMAGE, params={"boxes": json.dumps(boxes)}).status_code == 200


ABSURD = {
    "1e308": "[[1e308, 1e308, 1e308, 1e308]]",
    "huge-size": "[[0, 0, 1e308, 1e308]]",
    "1e400": "[[0, 0, 1e400, 5]]",
    "400-digit-int": f"[[0, 0, {'9' * 400}, 5]]",
    "5000-digit-int": f"[[0, 0, {'9' * 5000}, 5]]",
    "NaN": "[[NaN, 0, 5, 5]]",
    "Infinity": "[[0, 0, Infinity, 5]]",
    "tiny-size": "[[0, 0, 1e-300, 1e-300]]",
    "bool": "[[true, 0, 5, 5]]",
    "string": '[["0", 0, 5, 5]]',
    "nested-20k": "[" * 20_000,  # fits in a URL
    "nested-100k": "[" * 100_000,
    "nested-100k-closed": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("text", ABSURD.values(), ids=ABSURD.keys())
@pytest.mark.parametrize("where", ["query", "form"])
def test_absurd_numbers_get_a_400_json_error_counted_once(client, text, where):
    if where == "query" and len(text) > 20_000:
        pytest.skip("longer than a URL may be (uvicorn's HTTP parser refuses such a request line itself)")
    before = _errors(client)
    if where == "query":
        response = client.post("/v1/pose", content=IMAGE, params={"boxes": text})
    else:
        response = client.post("/v1/pose", files={"file": ("x.png", IMAGE, "image/png")}, data={"boxes": text})
    assert response.status_code == 400, response.text
    body = json.loads(response.text, parse_constant=lambda name: pytest.fail(f"{name} in the response"))
    assert body["error"]["type"] == "InputError" and len(body["error"]["message"]) < 500
    assert _counted_once(before, _errors(client), ("/v1/pose", "InputError"))


def test_a_non_image_body_gets_a_clean_message(client):
    response = client.post("/v1/pose", content=b"definitely not an image")
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "recognise its format" in message and "BytesIO" not in message and "0x" not in message


def _chunks():  # no Content-Length: the limit holds while reading
    for _ in range(8):
        yield b"\0" * 100_000


@pytest.mark.parametrize("body", [b"\0" * 300_001, _chunks], ids=["content-length", "streamed"])
def test_413_is_counted_once(client, body):
    before = _errors(client)
    response = client.post("/v1/pose", content=body if isinstance(body, bytes) else body())
    assert response.status_code == 413 and response.json()["error"]["type"] == "PayloadTooLarge"
    assert _counted_once(before, _errors(client), ("/v1/pose", "PayloadTooLarge"))


def test_404_and_401_are_counted_once(server, client):
    before = _errors(client)
    assert client.get("/nowhere").status_code == 404
    assert _counted_once(before, _errors(client), ("other", "NotFound"))
    before = _errors(client)
    assert httpx.get(f"{server.url}/v1/model").status_code == 401
    assert _counted_once(before, _errors(client), ("/v1/model", "Unauthorized"))


def test_docs_and_openapi_need_the_token(server, client):
    for path in ("/docs", "/openapi.json"):
        anonymous = httpx.get(server.url + path)
        assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "Unauthorized", path
        assert client.get(path).status_code == 200, path
    assert "/v1/pose" in client.get("/openapi.json").json()["paths"]
    assert "openapi.json" in client.get("/docs").text
    assert httpx.get(server.url + "/redoc").status_code in (401, 404)


def test_an_internal_failure_is_a_json_500_counted_once(tmp_path):
    # The manifest promises 64x64 input but the model takes 32x32: ONNX Runtime itself fails.
    broken = write_artifact(tmp_path / "broken", pool_model(size=(32, 32)), pool_manifest(size=(64, 64)))
    with _LiveServer(broken, ServerSettings(workers=1)) as live, httpx.Client(base_url=live.url, timeout=30) as session:
        before = _errors(session)
        response = session.post("/v1/pose", content=IMAGE)
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "InternalError"
        assert _counted_once(before, _errors(session), ("/v1/pose", "InternalError"))


def test_a_full_server_answers_503_and_a_late_request_stops_with_504(artifact):
    limits = RequestLimits(max_boxes=4000, max_crop_pixels=8000 * INPUT * INPUT, batch_crops=2)
    settings = ServerSettings(timeout_s=1.5, workers=1, max_pending=1, limits=limits)
    with _LiveServer(artifact, settings) as live, httpx.Client(base_url=live.url, timeout=60) as session, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        # 4,000 people with flip in batches of one person: several times the timeout of work here.
        big = pool.submit(session.post, "/v1/pose", files={"file": ("x.png", IMAGE, "image/png")},
                          data={"boxes": json.dumps(_boxes(4000)), "flip": "true"})
        deadline = time.monotonic() + 30
        while _admitted(session) == 0 and not big.done():
            assert time.monotonic() < deadline, "the big request was never admitted"
            time.sleep(0.01)
        before = _errors(session)
        busy = session.post("/v1/pose", content=IMAGE)  # the big request holds the only slot for 1.5 s
        assert busy.status_code == 503 and busy.json()["error"]["type"] == "Overloaded"
        assert busy.headers["retry-after"] == "1"
        assert _counted_once(before, _errors(session), ("/v1/pose", "Overloaded"))
        late = big.result()
        assert late.status_code == 504 and late.json()["error"]["type"] == "DeadlineExceeded"
        # the work stopped with the answer: the slot and the only thread are free, so the next
        # request is served within its own 1.5 s (it would wait for the big one's work otherwise)
        assert _admitted(session) == 0
        assert session.post("/v1/pose", content=IMAGE).status_code == 200


_SERVE = """
import json, sys
from lbdeploy.runtime.limits import RequestLimits
from lbdeploy.runtime.predictor import Predictor
from lbdeploy.runtime.server import ServerSettings, serve
options = json.loads(sys.argv[3])
settings = ServerSettings(limits=RequestLimits(**options.pop("limits")), **options)
predictor = Predictor(sys.argv[1])
serve(lambda: predictor, "127.0.0.1", int(sys.argv[2]), settings, log_level="warning")
"""


def _watch_rss(pid: int, stop) -> int:
    """Largest RSS of process `pid` seen until `stop` is set (sampled every 5 ms)."""
    process, peak = psutil.Process(pid), 0
    while not stop.is_set():
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.005)
    return peak


def test_1000_boxes_with_flip_keep_memory_bounded_and_others_answered(tmp_path):
    import threading

    size = (256, 256)
    artifact = write_artifact(tmp_path / "big", pool_model(size=size), pool_manifest(size=size))
    options = {"workers": 1, "max_pending": 4, "timeout_s": 300,
               "limits": {"max_boxes": 1000, "max_crop_pixels": 2000 * 256 * 256, "batch_crops": 16}}
    port = _free_port()
    log = open(tmp_path / "serve.log", "wb")
    process = subprocess.Popen([sys.executable, "-c", _SERVE, str(artifact), str(port), json.dumps(options)],
                               cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
        image = _png(dot_image(640, 480, {0: (300, 200), 1: (100, 400), 2: (500, 50)}))
        with httpx.Client(base_url=url, timeout=300) as session, \
                concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            assert session.post("/v1/pose", content=image, params={"flip": "true"}).status_code == 200  # warm up
            baseline = psutil.Process(process.pid).memory_info().rss
            stop = threading.Event()
            peak = pool.submit(_watch_rss, process.pid, stop)
            boxes = [[(7 * i) % 600, (11 * i) % 440, 40, 40] for i in range(1000)]
            big = pool.submit(session.post, "/v1/pose", content=image,
                              params={"boxes": json.dumps(boxes), "flip": "true"})
            while _admitted(session) == 0 and not big.done():
                time.sleep(0.01)
            start = time.monotonic()
            small = session.post("/v1/pose", content=image, params={"boxes": "[[300, 200, 40, 40]]"})
            small_s = time.monotonic() - start
            big_running = not big.done()
            answer = big.result()
            stop.set()
            growth_mb = (peak.result() - baseline) / 2**20
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["people"]) == 1000
        assert growth_mb < RSS_BOUND_MB, f"server RSS grew by {growth_mb:.0f} MB"
        assert small.status_code == 200 and len(small.json()["people"]) == 1
        assert small_s < ANSWER_BOUND_S and big_running, "the small request waited for the big one"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
