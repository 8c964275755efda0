"""Saliency models through the runtime: SaliencyPredictor, `lbdeploy infer`, `serve`'s /v1/saliency
and `lbdeploy eval --compare`, on the bundled CPD-LB demo exported for this machine (real ORT)."""

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from runtime_artifacts import pool_manifest, pool_model, write_artifact

pytest.importorskip("torch", reason="exporting needs torch (pip install lbdeploy[torch])")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from lbdeploy.cli import main  # noqa: E402
from lbdeploy.errors import ConfigError  # noqa: E402
from lbdeploy.runtime.tasks.saliency import SaliencyPredictor  # noqa: E402
from lbdeploy.runtime.tasks.saliency import draw_saliency, saliency_png, saliency_to_json, salient_box  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "lbdeploy" / "data" / "cpd_demo.pt"
SAMPLE = REPO / "lbdeploy" / "data" / "sample.jpg"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """The CPD-LB demo exported for x86 (ONNX Runtime, TernaryConv kernels, parity gate)."""
    from lbdeploy.exporters.export import export_model

    out = tmp_path_factory.mktemp("cpd") / "out"
    export_model(DEMO, out, target="x86", kernels="ternary")
    return out


@pytest.fixture(scope="module")
def image():
    from lbdeploy.data.saliency import SyntheticSaliency

    return SyntheticSaliency("val", size=1, seed=7, image_size=80).load(0)[0]


def test_artifact_predicts_the_torch_map_at_the_image_size(artifact, image):
    exported = SaliencyPredictor(artifact).predict(image)
    reference = SaliencyPredictor(DEMO).predict(image)  # the model.pt on torch
    assert exported.probabilities.shape == (80, 80) and exported.image_size == (80, 80)
    assert 0.0 <= exported.probabilities.min() and exported.probabilities.max() <= 1.0
    np.testing.assert_allclose(exported.probabilities, reference.probabilities, atol=1e-4)
    assert salient_box(exported.probabilities) is not None  # the demo finds the synthetic object


def test_predictors_refuse_the_other_task(artifact, tmp_path):
    from lbdeploy.runtime.predictor import Predictor

    with pytest.raises(ConfigError, match="'saliency' model.*SaliencyPredictor"):
        Predictor(artifact)
    pose = write_artifact(tmp_path / "pose", pool_model(), pool_manifest())
    with pytest.raises(ConfigError, match="'pose' model"):
        SaliencyPredictor(pose)


def test_results_png_overlay_and_json():
    from lbdeploy.runtime.tasks.saliency import SaliencyResult

    prob = np.zeros((10, 20), dtype=np.float32)
    prob[2:5, 4:9] = 0.9
    result = SaliencyResult(prob, (20, 10))
    decoded = np.asarray(Image.open(io.BytesIO(saliency_png(result))))
    assert decoded.shape == (10, 20) and decoded[3, 5] == round(0.9 * 255) and decoded[0, 0] == 0
    stats = saliency_to_json(result, "x")
    assert stats["box"] == [4, 2, 5, 3] and stats["salient_fraction"] == round(15 / 200, 5)
    overlay = np.asarray(draw_saliency(np.full((10, 20, 3), 100, np.uint8), result))
    assert overlay[3, 6, 0] > 150 and overlay[3, 6, 1] < 100  # tinted red inside
    assert (overlay[8, 15] == 100).all()  # untouched outside the box and the map


def test_overlay_stays_visible_on_a_red_object():
    from lbdeploy.runtime.predictor import SaliencyResult

    image = np.full((10, 20, 3), 100, np.uint8)
    image[2:5, 4:9] = (230, 20, 20)  # a red object, where the map is salient
    prob = np.zeros((10, 20), dtype=np.float32)
    prob[2:5, 4:9] = 0.9
    overlay = np.asarray(draw_saliency(image, SaliencyResult(prob, (20, 10)))).astype(int)
    assert np.abs(overlay[3, 6] - image[3, 6]).max() > 80  # a red tint would change it by under 20


def test_cli_infer_writes_map_overlay_and_json(artifact, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["infer", str(artifact), str(SAMPLE), "--draw", str(tmp_path / "sal.png"),
                                  "--json", str(tmp_path / "sal.json")])
    assert result.exit_code == 0, result.output
    expected = SaliencyPredictor(artifact).predict(str(SAMPLE))
    saved = np.asarray(Image.open(tmp_path / "sal.png"))
    np.testing.assert_array_equal(saved, np.asarray(Image.open(io.BytesIO(saliency_png(expected)))))
    assert Image.open(tmp_path / "sal.overlay.png").size == Image.open(SAMPLE).size
    document = json.loads((tmp_path / "sal.json").read_text())
    assert document["task"] == "saliency" and document["images"][0] == saliency_to_json(expected, str(SAMPLE))
    folder = tmp_path / "many"
    result = runner.invoke(main, ["infer", str(artifact), str(SAMPLE), str(SAMPLE), "--draw", str(folder)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in folder.iterdir()} == {"sample.saliency.png", "sample.overlay.png"}
    refused = runner.invoke(main, ["infer", str(artifact), str(SAMPLE), "--box", "1,2,3,4", "--flip"])
    assert refused.exit_code == 2 and "--box and --flip are pose options" in refused.output
    refused = runner.invoke(main, ["infer", str(artifact), str(SAMPLE), "--detector", "none", "--smooth"])
    assert refused.exit_code == 2 and "--detector and --smooth are pose options" in refused.output
    (tmp_path / "clip.mp4").write_bytes(b"not decoded: refused by its suffix first")
    refused = runner.invoke(main, ["infer", str(artifact), str(tmp_path / "clip.mp4")])
    assert refused.exit_code == 2 and "videos are not supported for saliency" in refused.output
    refused = runner.invoke(main, ["infer", str(artifact), str(SAMPLE), "--draw", str(tmp_path / "sal.jpgx")])
    assert refused.exit_code == 2 and ".jpgx is not an image format" in refused.output
    assert not (tmp_path / "sal.jpgx").exists()
    one = runner.invoke(main, ["infer", str(artifact), str(SAMPLE), "--json", str(tmp_path / "one.json")])
    assert one.exit_code == 0 and f"Wrote {tmp_path / 'one.json'} (1 image)" in one.output


def test_cli_eval_compares_torch_and_ort(tmp_path):
    result = CliRunner().invoke(main, ["eval", str(DEMO), "--data", "synthetic-saliency:4,6", "--compare", "torch,ort",
                                       "--json"])
    assert result.exit_code == 0, result.output
    results = json.loads(result.output[result.output.index("{"):])["results"]
    assert set(results) == {"torch", "ort"} and results["torch"]["images"] == 6
    assert abs(results["torch"]["mae"] - results["ort"]["mae"]) <= 1e-3
    assert abs(results["torch"]["max_f"] - results["ort"]["max_f"]) <= 1e-3


# --- the server ------------------------------------------------------------------------------------

fastapi = pytest.importorskip("fastapi", reason="fastapi is not installed (pip install 'lbdeploy[serve]')")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install 'lbdeploy[serve]')")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from live_server import LiveServer as _LiveServer  # noqa: E402


def _png_bytes(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _errors(client, endpoint, kind) -> float:
    match = re.search(rf'^lbdeploy_errors_total{{endpoint="{re.escape(endpoint)}",type="{kind}"}} (\S+)$',
                      client.get("/metrics").text, re.M)
    return float(match.group(1)) if match else 0.0


def test_server_saliency_endpoint(artifact, image):
    from lbdeploy.runtime.tasks.saliency import SaliencyPredictorFactory
    from lbdeploy.runtime.server import ServerSettings

    expected = SaliencyPredictor(artifact).predict(image)
    with _LiveServer(SaliencyPredictorFactory(artifact), ServerSettings(max_pixels=100 * 100)) as live:
        client = live.client
        response = client.post("/v1/saliency", content=_png_bytes(image), headers={"Content-Type": "image/png"})
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.content == saliency_png(expected)
        response = client.post("/v1/saliency", files={"file": ("x.png", _png_bytes(image), "image/png")},
                               data={"format": "json"})
        assert response.status_code == 200 and response.json() == saliency_to_json(expected)
        bad = client.post("/v1/saliency", content=_png_bytes(image), params={"format": "jpeg"})
        assert bad.status_code == 400 and "format must be one of" in bad.json()["error"]["message"]
        large = client.post("/v1/saliency", content=_png_bytes(np.zeros((120, 120, 3), np.uint8)))
        assert large.status_code == 400 and large.json()["error"]["type"] == "InputError"
        wrong = client.post("/v1/pose", content=_png_bytes(image))
        assert wrong.status_code == 404 and "POST the image to /v1/saliency" in wrong.json()["error"]["message"]
        assert _errors(client, "/v1/pose", "WrongTask") == 1.0
        model = client.get("/v1/model").json()
        assert model["task"] == "saliency" and model["saliency"]["output_activation"] == "sigmoid"
        assert "joint_names" not in model


def test_pose_server_refuses_saliency(tmp_path):
    from lbdeploy.runtime.predictor import PredictorFactory
    from lbdeploy.runtime.server import ServerSettings

    pose = write_artifact(tmp_path / "pose", pool_model(), pool_manifest())
    with _LiveServer(PredictorFactory(pose), ServerSettings()) as live:
        client = live.client
        response = client.post("/v1/saliency", content=_png_bytes(np.zeros((8, 8, 3), np.uint8)))
        assert response.status_code == 404 and "POST the image to /v1/pose" in response.json()["error"]["message"]
        assert _errors(client, "/v1/saliency", "WrongTask") == 1.0
