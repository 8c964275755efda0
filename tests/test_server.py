"""The HTTP server end to end: live uvicorn servers on 127.0.0.1 (threads in this process, and one
`lbdeploy serve` subprocess), real HTTP clients, the real ONNX Runtime backend."""

import concurrent.futures
import io
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime_artifacts import dot_image, pool_manifest, pool_model, write_artifact

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("fastapi", reason="fastapi is not installed (pip install 'lbdeploy[serve]')")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install 'lbdeploy[serve]')")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from live_server import LiveServer as _LiveServer  # noqa: E402
from lbdeploy.runtime.predictor import Predictor  # noqa: E402
from lbdeploy.runtime.tasks.pose import pose_to_json  # noqa: E402
from lbdeploy.runtime.server import ServerSettings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BODY = 300_000
MAX_PIXELS = 400 * 400


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return write_artifact(tmp_path_factory.mktemp("pool"), pool_model(), pool_manifest())


@pytest.fixture(scope="module")
def server(artifact):
    settings = ServerSettings(token=TOKEN, max_body_bytes=MAX_BODY, max_pixels=MAX_PIXELS, timeout_s=30, workers=3)
    with _LiveServer(artifact, settings) as live:
        yield live


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as session:
        yield session


def _metric(client, name, **labels) -> float:
    text = client.get("/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{re.escape(name)}{{{re.escape(wanted)}}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_pose_matches_the_python_api(client, artifact):
    image = dot_image(160, 120, {0: (40, 60), 1: (120, 30)})
    boxes = [[20, 20, 60, 80], [90, 0, 60, 60]]
    response = client.post("/v1/pose", content=_png(image), params={"boxes": json.dumps(boxes), "flip": "true"},
                           headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    predictor = Predictor(artifact)
    expected = pose_to_json(predictor.predict(image, boxes=boxes, flip=True), predictor.joint_names, predictor.skeleton)
    assert response.json() == expected
    assert len(response.json()["people"][0]["keypoints"]) == 3 * 3


def test_multipart_upload_with_form_boxes(client, artifact):
    image = dot_image(100, 100, {2: (50, 50)})
    response = client.post("/v1/pose", files={"file": ("x.png", _png(image), "image/png")},
                           data={"boxes": json.dumps([10, 10, 80, 80])})
    assert response.status_code == 200, response.text
    predictor = Predictor(artifact)
    expected = pose_to_json(predictor.predict(image, boxes=[[10, 10, 80, 80]]), predictor.joint_names, predictor.skeleton)
    assert response.json() == expected


def test_heatmaps_come_back_as_npy(client, artifact):
    image = dot_image(64, 64, {0: (10, 20)})
    response = client.post("/v1/heatmaps", content=_png(image))
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    heatmaps = np.load(io.BytesIO(response.content), allow_pickle=False)
    expected = Predictor(artifact).predict(image, return_heatmaps=True).heatmaps
    np.testing.assert_array_equal(heatmaps, expected)


def test_concurrent_clients_get_the_same_results_as_the_python_api(server, artifact):
    rng = np.random.default_rng(7)
    images = [dot_image(120, 90, {int(rng.integers(3)): (int(rng.integers(5, 115)), int(rng.integers(5, 85)))})
              for _ in range(12)]
    predictor = Predictor(artifact)
    expected = [pose_to_json(predictor.predict(img, flip=bool(i % 2)), predictor.joint_names, predictor.skeleton)
                for i, img in enumerate(images)]

    def call(i):
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as session:
            return session.post("/v1/pose", content=_png(images[i]), params={"flip": str(bool(i % 2)).lower()}).json()

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(call, range(len(images))))
    assert answers == expected


@pytest.mark.parametrize("body, params", [
    (b"definitely not an image", {}),
    (b"", {}),
    (_png(np.zeros((8, 8, 3), np.uint8))[:30], {}),
    (_png(np.zeros((8, 8, 3), np.uint8)), {"boxes": "[[1, 2, 3]]"}),
    (_png(np.zeros((8, 8, 3), np.uint8)), {"boxes": "not json"}),
    (_png(np.zeros((8, 8, 3), np.uint8)), {"flip": "maybe"}),
    (_png(np.zeros((401, 401, 3), np.uint8)), {}),
], ids=["garbage", "empty", "truncated", "short-box", "bad-json", "bad-flip", "too-many-pixels"])
def test_bad_requests_get_a_400_json_error(client, body, params):
    before = _metric(client, "lbdeploy_errors_total", endpoint="/v1/pose", type="InputError")
    response = client.post("/v1/pose", content=body, params=params)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "InputError" and response.json()["error"]["message"]
    assert _metric(client, "lbdeploy_errors_total", endpoint="/v1/pose", type="InputError") == before + 1


def test_oversize_bodies_get_413_by_length_and_while_streaming(client):
    big = b"\0" * (MAX_BODY + 1)
    response = client.post("/v1/pose", content=big)
    assert response.status_code == 413 and response.json()["error"]["type"] == "PayloadTooLarge"

    def chunks():  # no Content-Length: the limit must hold while reading
        for _ in range(8):
            yield b"\0" * (MAX_BODY // 4)

    response = client.post("/v1/pose", content=chunks())
    assert response.status_code == 413 and response.json()["error"]["type"] == "PayloadTooLarge"
    response = client.post("/v1/pose", files={"file": ("big.png", big, "image/png")})
    assert response.status_code == 413


def test_token_is_required_except_for_healthz(server):
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        for method, path in [("post", "/v1/pose"), ("post", "/v1/heatmaps"), ("get", "/v1/model"), ("get", "/metrics")]:
            response = getattr(anonymous, method)(path)
            assert response.status_code == 401, path
            assert response.json()["error"]["type"] == "Unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"
        wrong = anonymous.get("/v1/model", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401


def test_model_summary_and_openapi(client):
    model = client.get("/v1/model").json()
    assert model["arch"] == "pool-test" and model["joint_names"] == ["red", "green", "blue"]
    assert "files" not in model
    spec = client.get("/openapi.json").json()
    assert {"/v1/pose", "/v1/heatmaps", "/v1/model", "/healthz", "/metrics"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/pose"]["post"]["requestBody"]["content"]


def test_metrics_count_requests_and_latency(client):
    labels = {"endpoint": "/v1/pose", "status": "200"}
    before = _metric(client, "lbdeploy_requests_total", **labels)
    count_before = _metric(client, "lbdeploy_request_latency_seconds_count", endpoint="/v1/pose")
    for _ in range(3):
        assert client.post("/v1/pose", content=_png(dot_image(32, 32, {}))).status_code == 200
    assert _metric(client, "lbdeploy_requests_total", **labels) == before + 3
    assert _metric(client, "lbdeploy_request_latency_seconds_count", endpoint="/v1/pose") == count_before + 3
    text = client.get("/metrics").text
    assert "# TYPE lbdeploy_request_latency_seconds histogram" in text
    assert 'lbdeploy_request_latency_seconds_bucket{endpoint="/v1/pose",le="+Inf"}' in text


def test_inference_past_the_timeout_gets_504(artifact):
    settings = ServerSettings(timeout_s=0.001, workers=1)
    big = _png((np.random.default_rng(0).random((1500, 1500, 3)) * 255).astype(np.uint8))
    with _LiveServer(artifact, settings) as live, httpx.Client(base_url=live.url, timeout=30) as session:
        response = session.post("/v1/pose", content=big)
        assert response.status_code == 504 and "longer than" in response.json()["error"]["message"]
        assert session.get("/healthz").status_code == 200


def test_lbdeploy_serve_command_binds_localhost(artifact):
    port = _free_port()
    process = subprocess.Popen([sys.executable, "cli.py", "serve", str(artifact), "--port", str(port), "--workers", "2",
                                "--detector", "none"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.time() > deadline or process.poll() is not None:
                    raise AssertionError(f"lbdeploy serve did not start: {process.stdout.read().decode()}")
                time.sleep(0.1)
        assert response.json() == {"status": "ok"}
        pose = httpx.post(f"http://127.0.0.1:{port}/v1/pose", content=_png(dot_image(40, 40, {0: (20, 20)})))
        assert pose.status_code == 200 and len(pose.json()["people"]) == 1
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_lbdeploy_serve_refuses_a_modified_artifact(artifact, tmp_path):
    import shutil

    copy = Path(shutil.copytree(artifact, tmp_path / "a"))
    (copy / "model.onnx").write_bytes(b"tampered")
    done = subprocess.run([sys.executable, "cli.py", "serve", str(copy), "--port", str(_free_port())],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "modified" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_ray_serve_replicas_answer_like_the_python_api(artifact):
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'lbdeploy[ray]')")
    from lbdeploy.runtime import ray_serve
    from lbdeploy.runtime.predictor import PredictorFactory

    port = _free_port()
    settings = ServerSettings(token=TOKEN, max_body_bytes=MAX_BODY, max_pixels=MAX_PIXELS, workers=1)
    owned = ray_serve.start(PredictorFactory(artifact), "127.0.0.1", port, settings, replicas=2, num_cpus=2)
    try:
        predictor = Predictor(artifact)
        images = [dot_image(96, 80, {0: (10 + 7 * i, 20), 2: (50, 70 - 3 * i)}) for i in range(6)]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=60) as session:
            assert session.get("/healthz").json() == {"status": "ok"}
            assert session.get("/v1/model", headers={"Authorization": "Bearer wrong"}).status_code == 401
            for image in images:
                answer = session.post("/v1/pose", content=_png(image), params={"flip": "true"})
                assert answer.status_code == 200, answer.text
                expected = predictor.predict(image, flip=True)
                assert answer.json() == pose_to_json(expected, predictor.joint_names, predictor.skeleton)
            assert session.post("/v1/pose", content=b"junk").status_code == 400
    finally:
        ray_serve.stop(owned)
