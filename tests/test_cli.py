"""The command line: create / inspect / models, help examples, one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from lbdeploy.cli import main
from lbdeploy import __version__


@pytest.fixture()
def runner():
    return CliRunner()


def test_version(runner):
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_every_command_has_an_example(runner):
    for name in main.commands:
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Example:" in result.output, f"`lbdeploy {name} --help` has no Example block"


def test_create_then_inspect_json(runner, tmp_path):
    path = tmp_path / "m.pt"
    result = runner.invoke(main, ["create", "lbrn-s", "--stacks", "2", "--density", "0.25", "--input-size", "128x128",
                                  "-o", str(path)])
    assert result.exit_code == 0, result.output
    assert "calibrating its BatchNorm statistics on 4 synthetic images" in result.output  # says what it is doing
    result = runner.invoke(main, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    for key in ("arch", "trainable_params", "fixed_params", "flops", "ternary_layers", "density"):
        assert key in data
    assert data["arch"] == "lbrn-s" and data["density"] == pytest.approx(0.25, abs=1e-3)
    assert data["ternary_layers"] == 31 and data["input_size"] == [128, 128]
    table = runner.invoke(main, ["inspect", str(path)])
    assert 0 < table.output.index("trainable params") < table.output.index("hg.0.hg.0.0.0.conv2")  # summary first
    running_var = torch.load(path, weights_only=True)["state_dict"]["hg.1.hg.0.3.0.bn2.running_var"]
    assert not torch.equal(running_var, torch.ones_like(running_var))  # calibrated (docs/models.md)


def test_import_turns_a_bare_state_dict_into_a_model_pt(runner, tmp_path):
    from lbdeploy.checkpoint import load_model
    from lbdeploy.models import build_model

    model = build_model("lbrn-s", stacks=1, feats=64, input_size=(64, 64), seed=5)
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    refused = runner.invoke(main, ["inspect", str(tmp_path / "weights.pth")])
    assert refused.exit_code == 2 and "lbdeploy import" in refused.output
    out = tmp_path / "m.pt"
    result = runner.invoke(main, ["import", str(tmp_path / "weights.pth"), "lbrn-s", "--stacks", "1", "--feats", "64",
                                  "--input-size", "64", "--seed", "5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    loaded, ckpt = load_model(out)
    assert ckpt.config["feats"] == 64 and ckpt.metadata["input_size"] == [64, 64]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded(x)[0])
    wrong = runner.invoke(main, ["import", str(tmp_path / "weights.pth"), "lbrn-s", "--stacks", "1", "-o", str(out)])
    assert wrong.exit_code == 2 and "do not fit lbrn-s built with stacks=1" in wrong.output


def test_models_lists_presets(runner):
    result = runner.invoke(main, ["models"])
    assert result.exit_code == 0 and "lbrn-p" in result.output and "resnet-lbb-56" in result.output


@pytest.mark.parametrize("args,needle", [
    (["create", "nope", "-o", "x.pt"], "unknown model"),
    (["create", "lbrn-s", "--input-size", "100x100", "-o", "x.pt"], "multiples of 64"),
    (["create", "lbrn-s", "--input-size", "big", "-o", "x.pt"], "--input-size"),
    (["inspect", "missing.pt"], "no such file"),
])
def test_user_errors_are_one_line_exit_2(runner, tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, args)
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_console_entry_point_reports_corrupt_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02garbage")
    proc = subprocess.run([sys.executable, "-m", "lbdeploy.cli", "inspect", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error:") and "Traceback" not in proc.stderr


def test_eval_prints_its_duration_first_and_plots(runner, tmp_path):
    from PIL import Image

    model = tmp_path / "m.pt"
    assert runner.invoke(main, ["create", "lbrn-s", "--stacks", "1", "--feats", "32", "--input-size", "64",
                                "-o", str(model)]).exit_code == 0
    plot = tmp_path / "pck.png"
    result = runner.invoke(main, ["eval", str(model), "--data", "synthetic:2,12", "--limit", "10", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    notice = [line for line in result.stderr.splitlines() if line.startswith("Evaluating 10 people: about")]
    assert notice and "torch" in notice[0] and "per person" in notice[0]
    assert result.stderr.index(notice[0]) < result.stderr.index(f"Wrote {plot}")
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size == (820, 520)


def test_duration_notice_suggests_a_limit_only_when_long():
    from lbdeploy.commands.train import duration_notice

    short = duration_notice(40, {"torch": 0.5, "ort": 0.25})
    assert short == "Evaluating 40 people: about 30 s (torch 0.50 s, ort 0.25 s per person)."
    long = duration_notice(500, {"torch": 2.0, "ort": 2.0})
    assert "about 33.3 min" in long and "pass --limit 15 (about 60 s)" in long


@pytest.mark.parametrize("spec", ["synthetic:-5", "synthetic:10,-1", "synthetic:1,2,3"])
def test_impossible_synthetic_sizes_are_refused(runner, tmp_path, spec):
    (tmp_path / "m.pt").write_bytes(b"never read: the dataset is checked first")
    result = runner.invoke(main, ["eval", str(tmp_path / "m.pt"), "--data", spec, "--threads", "1", "--no-progress"])
    assert result.exit_code == 2 and "none negative" in result.output and len(result.output.strip().splitlines()) == 1


def test_train_help_keeps_each_example_on_its_own_line(runner):
    lines = runner.invoke(main, ["train", "--help"]).output.splitlines()
    assert any(line.strip().startswith("--input-size 64x64 --epochs 1") for line in lines)
