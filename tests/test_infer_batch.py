"""`lbdeploy infer` on several images: --draw is a folder, bad images are reported at the end."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from lbdeploy.cli import main
from runtime_artifacts import dot_image, pool_manifest, pool_model, write_artifact

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


@pytest.fixture(scope="module")
def pool_artifact(tmp_path_factory):
    return write_artifact(tmp_path_factory.mktemp("pool"), pool_model(), pool_manifest())


def _images(tmp_path, count):
    paths = []
    for i in range(count):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(dot_image(64, 48, {0: (10 + 10 * i, 20)})).save(paths[-1])
    return paths


@pytest.mark.parametrize("draw", ["x.png", "x.JPG"])
def test_several_images_refuse_a_draw_file_name(pool_artifact, tmp_path, draw):
    paths = _images(tmp_path, 2)
    result = CliRunner().invoke(main, ["infer", str(pool_artifact), *map(str, paths), "--draw", str(tmp_path / draw)])
    assert result.exit_code == 2 and "names a file" in result.output and "folder" in result.output
    assert not (tmp_path / draw).exists()  # no folder named x.png


def test_several_images_refuse_an_existing_file(pool_artifact, tmp_path):
    paths = _images(tmp_path, 2)
    (tmp_path / "overlays").write_text("not a folder")
    result = CliRunner().invoke(main, ["infer", str(pool_artifact), *map(str, paths), "--draw", str(tmp_path / "overlays")])
    assert result.exit_code == 2 and "names a file" in result.output


def test_a_bad_image_does_not_stop_the_others(pool_artifact, tmp_path):
    good = _images(tmp_path, 2)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    out_json, folder = tmp_path / "pose.json", tmp_path / "drawn"
    args = ["infer", str(pool_artifact), str(good[0]), str(bad), str(good[1]), "--json", str(out_json), "--draw", str(folder)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 2 and str(bad) in errors[0] and "1 of 3 images" in errors[1]
    assert sorted(p.name for p in folder.iterdir()) == ["img0.pose.png", "img1.pose.png"]  # the one after it too
    document = json.loads(out_json.read_text())
    assert [image["image_id"] for image in document["images"]] == [str(good[0]), str(good[1])]


def test_json_message_counts_people_in_english(pool_artifact, tmp_path):
    path = _images(tmp_path, 1)[0]
    one = CliRunner().invoke(main, ["infer", str(pool_artifact), str(path), "--detector", "none",
                                    "--json", str(tmp_path / "a.json")])
    assert one.exit_code == 0 and "(1 person)" in one.output
    two = CliRunner().invoke(main, ["infer", str(pool_artifact), str(path), "--box", "0,0,30,30", "--box", "30,0,30,30",
                                    "--json", str(tmp_path / "b.json")])
    assert two.exit_code == 0 and "(2 people)" in two.output
    assert np.array(json.loads((tmp_path / "b.json").read_text())["images"][0]["people"]).size == 2


def test_output_paths_follow_one_convention(pool_artifact, tmp_path):
    """Missing parent folders are made; paths that cannot be written are refused before any work."""
    path = _images(tmp_path, 1)[0]
    runner = CliRunner()
    made = runner.invoke(main, ["infer", str(pool_artifact), str(path), "--detector", "none",
                                "--draw", str(tmp_path / "new" / "deep" / "p.png"), "--json", str(tmp_path / "j" / "p.json")])
    assert made.exit_code == 0, made.output
    assert Image.open(tmp_path / "new" / "deep" / "p.png").size == (64, 48)
    assert json.loads((tmp_path / "j" / "p.json").read_text())["images"][0]["image_id"] == str(path)
    (tmp_path / "afile").write_text("a file")
    for draw, message in ((tmp_path / "out.jpgx", ".jpgx is not an image format"), (tmp_path / "noext", "no suffix"),
                          (tmp_path / "afile" / "p.png", "afile is a file, not a folder")):
        refused = runner.invoke(main, ["infer", str(pool_artifact), str(path), "--detector", "none", "--draw", str(draw),
                                       "--json", str(tmp_path / "never.json")])
        assert refused.exit_code == 2 and message in refused.output and "Traceback" not in refused.output, refused.output
        assert not (tmp_path / "never.json").exists() and not Path(draw).exists()
    (tmp_path / "folder").mkdir()
    into = runner.invoke(main, ["infer", str(pool_artifact), str(path), "--detector", "none", "--draw", str(tmp_path / "folder")])
    assert into.exit_code == 0 and [p.name for p in (tmp_path / "folder").iterdir()] == ["img0.pose.png"]
    refused = runner.invoke(main, ["infer", str(pool_artifact), str(path), "--json", str(tmp_path / "folder")])
    assert refused.exit_code == 2 and "is a directory" in refused.output  # click checks this one


def test_json_dash_is_standard_output(pool_artifact, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _images(tmp_path, 1)[0]
    result = CliRunner().invoke(main, ["infer", str(pool_artifact), str(path), "--detector", "none", "--json", "-"])
    assert result.exit_code == 0 and not (tmp_path / "-").exists()
    assert json.loads(result.stdout)["images"][0]["image_id"] == str(path)


def test_export_into_a_path_under_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("a file")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "m.pt"), "-o", str(tmp_path / "afile" / "out")])
    assert result.exit_code == 2 and "afile is a file, not a folder" in result.output
    assert "Traceback" not in result.output
