"""An artifact written by an earlier lbdeploy still loads and gives the answers it gave then.

tests/data/artifact-v1-pose/ is a 1-stack LBRN-S (16 features, 64x64 input) exported for x86 with
`--backend ort` by lbdeploy before the task and backend registries (format_version 1); its
manifest and model.onnx are kept as written. tests/data/artifact-v1-pose.infer.json is what
`lbdeploy infer ARTIFACT lbdeploy/data/sample.jpg --detector none` printed then, and
tests/data/artifact-v1-pose.model.pt the model.pt it was exported from. The kernel
library it names is compiled code for one machine, so it is not kept: the test builds this
machine's and records it the way files added on the device are recorded (`record_files`).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lbdeploy.artifact import open_artifact, record_files
from lbdeploy.cli import main
from lbdeploy.errors import ArtifactError

DATA = Path(__file__).resolve().parent / "data"
OLD = DATA / "artifact-v1-pose"
SAMPLE = Path(__file__).resolve().parent.parent / "lbdeploy" / "data" / "sample.jpg"
LIBRARY = "kernels/libternary_ort.so"
# Optional manifest sections added after the kept artifact: each ternary layer's kernel (issue 23)
# and the stored reference outputs of `lbdeploy verify` / `tune` (issue 24).
ADDED_SECTIONS = ("kernels", "reference")


@pytest.fixture(scope="module")
def old_artifact(tmp_path_factory, library):
    """The kept artifact with this machine's kernel library put where its manifest says."""
    folder = tmp_path_factory.mktemp("old") / "artifact"
    shutil.copytree(OLD, folder)
    with pytest.raises(ArtifactError, match="libternary_ort.so"):
        open_artifact(folder)  # the manifest still names the library it was exported with
    (folder / LIBRARY).parent.mkdir(exist_ok=True)
    shutil.copy2(library, folder / LIBRARY)
    record_files(folder, [LIBRARY])
    return folder


def test_old_manifest_validates_and_keeps_its_sections(old_artifact):
    _, manifest = open_artifact(old_artifact)
    assert manifest["format_version"] == 1 and manifest["task"] == "pose" and manifest["backend"] == "ort"
    assert manifest["pose"]["heatmap_stride"] == 4 and len(manifest["pose"]["joints"]) == 16


def test_old_artifact_infers_what_it_inferred(old_artifact):
    result = CliRunner().invoke(main, ["infer", str(old_artifact), str(SAMPLE), "--detector", "none"])
    assert result.exit_code == 0, result.output
    now = json.loads(result.stdout)["images"][0]
    then = json.loads((DATA / "artifact-v1-pose.infer.json").read_text())["images"][0]
    assert now["joints"] == then["joints"] and now["skeleton"] == then["skeleton"]
    assert len(now["people"]) == len(then["people"]) == 1
    np.testing.assert_allclose(now["people"][0]["keypoints"], then["people"][0]["keypoints"], rtol=1e-4, atol=2e-3)


def test_old_artifact_serves_its_model_summary(old_artifact):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lbdeploy.runtime.predictor import PredictorFactory
    from lbdeploy.runtime.server import create_app

    with TestClient(create_app(PredictorFactory(old_artifact, detector="none"))) as client:
        summary = client.get("/v1/model").json()
        assert summary["task"] == "pose" and len(summary["joint_names"]) == 16
        answer = client.post("/v1/pose", content=SAMPLE.read_bytes())
        assert answer.status_code == 200 and len(answer.json()["people"]) == 1


def test_exporting_the_same_model_writes_the_same_manifest(tmp_path, library):
    """The manifest format only grew: a fresh export of the kept model.pt has the kept manifest's
    sections in the same order with the same values (but file hashes, tool versions and the parity
    gate's measured errors), plus the optional sections added since (ADDED_SECTIONS)."""
    pytest.importorskip("torch", reason="exporting needs torch (pip install lbdeploy[torch])")
    from lbdeploy.exporters.export import export_model

    # --kernels ternary: every ternary layer as our op, as every export before the kernel choice
    fresh = export_model(DATA / "artifact-v1-pose.model.pt", tmp_path / "fresh", target="x86", backend="ort",
                         kernels="ternary")
    kept = json.loads((OLD / "manifest.json").read_text())
    assert [key for key in fresh if key not in ADDED_SECTIONS] == list(kept)
    assert set(ADDED_SECTIONS) <= set(fresh)
    for key in kept:
        if key == "parity":
            # the report may have gained fields (saliency_prob_worst_ratio, issue 24); the kept ones stay in order
            assert [field for field in fresh[key] if field in kept[key]] == list(kept[key])
            assert fresh[key]["passed"] and fresh[key]["inputs"] == kept[key]["inputs"]
        elif key not in ("files", "tools"):
            assert fresh[key] == kept[key], key
    assert {name for name in fresh["files"] if not name.startswith("reference/")} == set(kept["files"])
