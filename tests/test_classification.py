"""The classification task end to end: the paper's ResNet-LBB-56 (CIFAR-shaped, 32x32) created,
exported for this machine (TernaryConv kernels, parity gate on the top-1 class), run by
`lbdeploy infer` (top-k JSON, a labelled picture), served on POST /v1/classify over real HTTP and
evaluated on the synthetic CIFAR-shaped set beside PyTorch."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("torch", reason="creating and exporting needs torch (pip install lbdeploy[torch])")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from lbdeploy.cli import main  # noqa: E402
from lbdeploy.data.classification import SyntheticCifar  # noqa: E402
from lbdeploy.exporters.parity import compare  # noqa: E402
from lbdeploy.runtime.predictor import ClassificationPredictor, open_predictor  # noqa: E402
from lbdeploy.runtime.tasks.classification import classification_to_json  # noqa: E402
from lbdeploy.tasks.classification import CIFAR10_LABELS  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "lbdeploy" / "data" / "sample.jpg"


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory):
    path = tmp_path_factory.mktemp("cls") / "c.pt"
    result = CliRunner().invoke(main, ["create", "resnet-lbb-56", "-o", str(path)])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def artifact(model_pt):
    out = model_pt.parent / "out"
    # --kernels ternary: our op in every ternary layer, whatever `auto` would measure on this machine
    result = CliRunner().invoke(main, ["export", str(model_pt), "--target", "x86", "--kernels", "ternary", "-o",
                                       str(out)])
    assert result.exit_code == 0, result.output
    assert "identical top-1 classes: 100.0%" in result.output
    return out


def test_export_writes_the_classification_manifest(artifact):
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["task"] == "classification" and manifest["ops"] == "custom"
    assert manifest["outputs"] == [{"name": "logits", "shape": ["N", 10], "final": True}]
    assert manifest["classification"] == {"classes": 10, "labels": list(CIFAR10_LABELS)}
    assert manifest["parity"]["passed"] and manifest["parity"]["top1_agreement"] == 1.0
    assert manifest["parity"]["keypoint_agreement"] is None  # the report keeps its format across tasks


def test_parity_rule_is_the_top1_class():
    reference = {"logits": np.array([[0.0, 1.0, 0.5], [2.0, 0.0, 1.0]])}
    swapped = {"logits": np.array([[0.0, 1.0, 0.5], [0.999, 0.0, 1.0]])}
    report = compare(reference, reference, swapped, "classification", "test", {})
    assert not report.passed and report.top1_agreement == 0.5 and "identical top-1 classes: 50.0%" in report.summary()
    assert compare(reference, reference, reference, "classification", "test", {}).passed


def test_infer_prints_the_top_classes_and_draws_them(artifact, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["infer", str(artifact), str(SAMPLE), "--draw", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["task"] == "classification" and document["model"] == "resnet-lbb-56"
    top = document["images"][0]["top"]
    expected = ClassificationPredictor(artifact).predict(SAMPLE)
    assert [entry["class"] for entry in top] == [index for index, _, _ in expected.top(5)]
    assert [entry["label"] for entry in top] == [CIFAR10_LABELS[entry["class"]] for entry in top]
    probabilities = [entry["probability"] for entry in top]
    assert probabilities == sorted(probabilities, reverse=True) and 0.0 < sum(probabilities) <= 1.0 + 1e-6
    assert Image.open(tmp_path / "c.png").height == 256  # the picture of the top classes, enlarged
    refused = runner.invoke(main, ["infer", str(artifact), str(SAMPLE), "--flip"])
    assert refused.exit_code == 2 and "--flip is a pose option" in refused.output


def test_artifact_and_model_pt_agree_and_open_by_task(artifact, model_pt):
    exported, reference = open_predictor(artifact), open_predictor(model_pt, detector="hog")  # pose options dropped
    assert isinstance(exported, ClassificationPredictor) and isinstance(reference, ClassificationPredictor)
    images = np.stack([SyntheticCifar("val", 4).load(i)[0] for i in range(4)])
    np.testing.assert_allclose(exported.predict_batch(images), reference.predict_batch(images), atol=1e-5)


def test_manifest_without_the_section_still_runs(artifact, tmp_path):
    """Classification artifacts exported before the task registry have no `classification` section."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(artifact, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["classification"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert ClassificationPredictor(old).labels == list(CIFAR10_LABELS)


def test_eval_reports_top1_and_top5_beside_torch(model_pt):
    result = CliRunner().invoke(main, ["eval", str(model_pt), "--data", "synthetic-cifar:0,20", "--compare",
                                       "torch,ort", "--json"])
    assert result.exit_code == 0, result.output
    results = json.loads(result.output[result.output.index("{"):])["results"]
    assert set(results) == {"torch", "ort"} and results["torch"] == results["ort"]
    assert results["torch"]["images"] == 20 and results["torch"]["top1"] <= results["torch"]["top5"] <= 100.0
    refused = CliRunner().invoke(main, ["eval", str(model_pt), "--data", "synthetic-cifar:0,20", "--flip"])
    assert refused.exit_code == 2 and "pose options" in refused.output


def test_synthetic_cifar_classes_are_separable():
    """Each class has its own look: a nearest-mean classifier fitted on the train split labels most of
    the val split correctly, so a trained network can learn the set (and chance is 10 %)."""
    train, val = SyntheticCifar("train", 200), SyntheticCifar("val", 50)
    image, label = val.load(13)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and label == 3
    assert np.array_equal(image, SyntheticCifar("val", 50).load(13)[0])  # seeded
    features = lambda data: np.stack([data.load(i)[0].reshape(-1, 3).mean(0) for i in range(len(data))])  # noqa: E731
    labels = lambda data: np.array([data.load(i)[1] for i in range(len(data))])  # noqa: E731
    means = np.stack([features(train)[labels(train) == k].mean(0) for k in range(10)])
    guess = np.argmin(((features(val)[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (guess == labels(val)).mean() >= 0.9


fastapi = pytest.importorskip("fastapi", reason="fastapi is not installed (pip install 'lbdeploy[serve]')")
pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install 'lbdeploy[serve]')")

from live_server import LiveServer  # noqa: E402


def test_server_classify_endpoint(artifact):
    from lbdeploy.runtime.server import ServerSettings
    from lbdeploy.runtime.tasks import PredictorOfTask

    buffer = io.BytesIO()
    Image.open(SAMPLE).save(buffer, format="PNG")
    expected = ClassificationPredictor(artifact).predict(buffer.getvalue())
    with LiveServer(PredictorOfTask(artifact), ServerSettings()) as live:
        client = live.client
        answer = client.post("/v1/classify", content=buffer.getvalue(), params={"top_k": 3})
        assert answer.status_code == 200 and answer.json() == classification_to_json(expected, top_k=3)
        form = client.post("/v1/classify", files={"file": ("x.png", buffer.getvalue(), "image/png")})
        assert len(form.json()["top"]) == 5
        bad = client.post("/v1/classify", content=buffer.getvalue(), params={"top_k": 11})
        assert bad.status_code == 400 and "top_k must be an integer from 1 to 10" in bad.json()["error"]["message"]
        wrong = client.post("/v1/pose", content=buffer.getvalue())
        assert wrong.status_code == 404 and "POST the image to /v1/classify" in wrong.json()["error"]["message"]
        model = client.get("/v1/model").json()
        assert model["task"] == "classification" and model["classification"]["classes"] == 10
