"""POST /v1/pose/batch and the per-person boxes and ids of the pose endpoints, on a live uvicorn
server on 127.0.0.1 whose Predictor has a person detector (the synthetic scenes' ONNX detector)."""

import io
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from lbdeploy.data.scenes import make_scene

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("fastapi", reason="fastapi is not installed (pip install 'lbdeploy[serve]')")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install 'lbdeploy[serve]')")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from lbdeploy.runtime.predictor import Predictor  # noqa: E402
from lbdeploy.runtime.tasks.pose import pose_to_json  # noqa: E402
from lbdeploy.runtime.server import ServerSettings, create_app
from lbdeploy.runtime.tasks.pose_routes import MAX_BATCH_IMAGES  # noqa: E402
from runtime_artifacts import pool_manifest, pool_model, write_artifact  # noqa: E402


def _png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def predictor_args(tmp_path_factory, scene_detector):
    artifact = write_artifact(tmp_path_factory.mktemp("pool"), pool_model(), pool_manifest())
    return artifact, {"detector": str(scene_detector)}


@pytest.fixture(scope="module")
def url(predictor_args):
    artifact, kwargs = predictor_args
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(lambda: Predictor(artifact, **kwargs), ServerSettings(workers=2))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_batch_returns_every_image_with_boxes_and_ids_like_the_python_api(url, predictor_args):
    artifact, kwargs = predictor_args
    scenes = [make_scene(seed, people=people) for seed, people in ((1, 3), (2, 1), (3, 2))]
    files = [("files", (f"scene{i}.png", _png(s.image), "image/png")) for i, s in enumerate(scenes)]
    response = httpx.post(f"{url}/v1/pose/batch", files=files, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "pool-test" and [image["image_id"] for image in body["images"]] == [
        "scene0.png", "scene1.png", "scene2.png"]
    local = Predictor(artifact, **kwargs)
    for image, scene in zip(body["images"], scenes):
        assert [p["id"] for p in image["people"]] == list(range(len(scene.boxes)))
        expected = pose_to_json(local.predict(scene.image), local.joint_names, local.skeleton)
        for got, want in zip(image["people"], expected["people"]):
            np.testing.assert_allclose(got["box"], want["box"], atol=0.01)
            np.testing.assert_allclose(got["keypoints"], want["keypoints"], atol=1e-3)
            assert got["box_score"] == want["box_score"]


def test_single_pose_reports_detected_boxes_and_given_boxes(url):
    scene = make_scene(4, people=3)
    found = httpx.post(f"{url}/v1/pose", content=_png(scene.image), timeout=60).json()
    assert [p["id"] for p in found["people"]] == [0, 1, 2] and all("box_score" in p for p in found["people"])
    given = httpx.post(f"{url}/v1/pose", params={"boxes": "[[10, 10, 50, 80]]"}, content=_png(scene.image),
                       timeout=60).json()
    assert given["people"][0]["box"] == [10, 10, 50, 80] and "box_score" not in given["people"][0]


@pytest.mark.parametrize("request_kwargs, message", [
    ({"content": b"raw bytes"}, "multipart/form-data"),
    ({"files": [("file", ("a.png", b"x", "image/png"))]}, "fields named 'files'"),
    ({"files": [("files", ("a.png", b"not an image", "image/png"))]}, "not a readable image"),
    ({"files": [("files", (f"{i}.png", b"x", "image/png")) for i in range(MAX_BATCH_IMAGES + 1)]}, "at most"),
])
def test_bad_batches_get_a_400_json_error(url, request_kwargs, message):
    response = httpx.post(f"{url}/v1/pose/batch", timeout=60, **request_kwargs)
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_openapi_shows_the_pose_shapes(url):
    schema = httpx.get(f"{url}/openapi.json").json()
    batch = schema["paths"]["/v1/pose/batch"]["post"]
    assert "files" in batch["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert batch["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/BatchPoses")
    person = schema["components"]["schemas"]["PersonPose"]["properties"]
    assert {"keypoints", "box", "box_score", "id"} <= set(person)
    single = schema["paths"]["/v1/pose"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert single["$ref"].endswith("/ImagePoses")
