"""Training: the loss falls, a resumed run is identical to an uninterrupted one, ternary weights
never change, the train/eval commands work end to end (tiny models on the synthetic set)."""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from lbdeploy.cli import main  # noqa: E402
from lbdeploy.checkpoint import load_checkpoint, load_model  # noqa: E402
from lbdeploy.data.augment import NO_AUGMENTATION  # noqa: E402
from lbdeploy.data.synthetic import SyntheticPoses  # noqa: E402
from lbdeploy.errors import ConfigError, TernaryWeightError  # noqa: E402
from lbdeploy.models import build_model  # noqa: E402
from lbdeploy.training.losses import heatmap_loss  # noqa: E402
from lbdeploy.training.pose_dataset import PoseTrainingSet  # noqa: E402
from lbdeploy.training.schedule import make_optimizer, parse_drops  # noqa: E402
from lbdeploy.training.trainer import TrainConfig, ternary_buffers, train, verify_ternary_unchanged  # noqa: E402

TINY = {"stacks": 2, "modules": 1, "feats": 16, "input_size": (64, 64)}


def _config(output, **changes):
    base = dict(output=str(output), data="synthetic:8,4", model_options=dict(TINY), seed=5, epochs=2, batch_size=4,
                lr_drops=(2,), workers=0, threads=1, progress=False)
    return TrainConfig(**{**base, **changes})


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_loss_falls_over_a_few_steps_on_the_synthetic_set():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_model("lbrn-s", **TINY).train()
    data = PoseTrainingSet(SyntheticPoses("train", size=4), (64, 64), 4, 1.0, (0.5,) * 3, (0.25,) * 3, NO_AUGMENTATION)
    images, targets, weights = (torch.stack(t) for t in zip(*(data[i] for i in range(4))))
    optimizer = make_optimizer(model, 2.5e-4)
    losses = []
    for _ in range(12):
        loss = heatmap_loss(model(images), targets, weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_loss_sums_mse_over_stacks_and_ignores_zero_weight_joints():
    targets = torch.zeros(1, 2, 2, 2)
    out = torch.ones(1, 2, 2, 2)
    weights = torch.tensor([[1.0, 0.0]])
    assert float(heatmap_loss([out, out], targets, weights)) == pytest.approx(2 * 0.5)
    assert float(heatmap_loss(out, targets, weights)) == pytest.approx(0.5)


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    full = train(_config(tmp_path / "full"), log=lambda _: None)
    first = train(_config(tmp_path / "split", epochs=1), log=lambda _: None)
    assert first.history[0]["loss"] == full.history[0]["loss"]
    resumed = train(_config(tmp_path / "split", resume=True), log=lambda _: None)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert [h["lr"] for h in resumed.history] == [2.5e-4, 2.5e-4]
    a = load_checkpoint(full.last).state_dict
    b = load_checkpoint(resumed.last).state_dict
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = torch.load(tmp_path / "split" / "state.pt", weights_only=True)
    assert state["scheduler"]["last_epoch"] == 2 and state["epoch"] == 2
    with pytest.raises(ConfigError, match="already finished"):
        train(_config(tmp_path / "split", resume=True), log=lambda _: None)
    with pytest.raises(ConfigError, match="differ"):
        train(_config(tmp_path / "split", resume=True, epochs=3, lr=1e-3), log=lambda _: None)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(_config(tmp_path / "split"), log=lambda _: None)


def test_training_changes_real_weights_but_never_ternary_ones(tmp_path):
    lines = []
    result = train(_config(tmp_path / "run", epochs=1), log=lines.append)
    assert any(line.startswith("About ") and "per epoch (2 batches of 4)" in line and "for 1 epoch " in line
               for line in lines), lines  # estimated up front, before the first epoch's line
    trained, ckpt = load_model(result.last)
    fresh = build_model("lbrn-s", **{**TINY, "seed": 5})
    assert ckpt.metadata["training"]["epoch"] == 1
    assert verify_ternary_unchanged(trained) == len(ternary_buffers(fresh)) > 0
    assert all(torch.equal(ternary_buffers(fresh)[k], v) for k, v in ternary_buffers(trained).items())
    moved = [k for k, v in fresh.state_dict().items() if k.endswith("conv1.weight") and not torch.equal(v, trained.state_dict()[k])]
    assert moved  # the real 1x1 convs did train
    name, layer = next((n, m) for n, m in trained.named_modules() if n in ternary_buffers(trained))
    layer.weight.view(-1)[0] = -layer.weight.view(-1)[0] if layer.weight.view(-1)[0] != 0 else 1
    with pytest.raises(TernaryWeightError, match="differ from their seeded draw"):
        verify_ternary_unchanged(trained)


def test_lr_drops_parse_and_validate():
    assert parse_drops("150,170,200") == (150, 170, 200) and parse_drops("") == ()
    for bad in ("a,b", "170,150", "0"):
        with pytest.raises(ConfigError):
            parse_drops(bad)


def test_train_and_eval_commands_end_to_end(tmp_path):
    runner = CliRunner()
    run = tmp_path / "cli-run"
    args = ["train", "--data", "synthetic:8,4", "--stacks", "1", "--feats", "16", "--input-size", "64x64",
            "--epochs", "1", "--batch-size", "4", "--workers", "0", "--threads", "1", "--no-progress", "-o", str(run)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "bit-identical" in result.output
    assert {p.name for p in run.iterdir()} >= {"last.pt", "best.pt", "state.pt", "log.jsonl"}
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[0]["epoch"] == 1 and log[0]["pck"] is not None

    again = runner.invoke(main, args)
    assert again.exit_code == 2 and "already holds a run" in again.output

    evaluated = runner.invoke(main, ["eval", str(run / "best.pt"), "--data", "synthetic:8,4", "--limit", "3", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.output)["results"]["torch"]
    assert report["metric"] == "PCKh" and report["people"] == 3
    assert list(report["groups"]) == ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total"]
    # The trainer's batched validation and the runtime Predictor use the same crops: same PCK.
    from lbdeploy.evaluation.evaluate import evaluate, predict_with_model
    from lbdeploy.data import open_dataset

    model, ckpt = load_model(run / "best.pt")
    val = open_dataset("synthetic:8,4", "val")
    direct = evaluate(val, predict_with_model(model, val, (64, 64), ckpt.metadata["mean"], ckpt.metadata["std"], limit=3))
    assert direct.total == pytest.approx(report["groups"]["Total"], abs=1e-3)

    table = runner.invoke(main, ["eval", str(run / "best.pt"), "--data", "synthetic:8,4", "--limit", "2",
                                 "--compare", "torch,ort"])
    assert table.exit_code == 0, table.output
    header = next(line for line in table.output.splitlines() if line.startswith("PCKh@0.5"))
    assert header.split()[1:] == ["torch", "ort"]  # the model.pt is exported on the fly for ort
    assert "exporting" in table.output


def test_pose_training_rejects_classification_presets(tmp_path):
    with pytest.raises(ConfigError, match="not a pose model"):
        train(_config(tmp_path / "r", model_options={}, **{"arch": "resnet56"}), log=lambda _: None)


@pytest.mark.slow
def test_eval_compares_torch_and_an_exported_onnx_runtime_artifact(tmp_path):
    pytest.importorskip("onnxruntime")
    from lbdeploy.errors import KernelLibraryError

    runner = CliRunner()
    model = tmp_path / "m.pt"
    created = runner.invoke(main, ["create", "lbrn-s", "--stacks", "1", "--feats", "16", "--input-size", "64x64",
                                   "-o", str(model)])
    assert created.exit_code == 0, created.output
    exported = runner.invoke(main, ["export", str(model), "--target", "x86", "-o", str(tmp_path / "art")])
    if isinstance(exported.exception, KernelLibraryError):
        pytest.skip(f"the ORT kernel library cannot be built here: {exported.exception}")
    assert exported.exit_code == 0, exported.output
    result = runner.invoke(main, ["eval", str(model), str(tmp_path / "art"), "--data", "synthetic:8,4", "--limit", "4",
                                  "--compare", "torch,ort", "--json"])
    assert result.exit_code == 0, result.output
    results = json.loads(result.output[result.output.index("{"):])["results"]
    assert set(results) == {"torch:m.pt", "ort:m.pt", "ort:art"}  # ort:m.pt exported on the fly
    # Same crops and decoding; heatmaps agree to ~1e-6, so at most a near-tie joint may differ.
    one_joint = 100.0 / (4 * 14)
    for exported_side in ("ort:m.pt", "ort:art"):
        assert abs(results["torch:m.pt"]["groups"]["Total"] - results[exported_side]["groups"]["Total"]) <= one_joint + 1e-9


@pytest.mark.slow
def test_torchrun_with_two_cpu_processes_trains_through_ddp(tmp_path):
    import shutil
    import subprocess
    import sys

    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("torchrun is not installed")
    run = tmp_path / "ddp"
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "lbdeploy.cli", "train", "--data", "synthetic:16,4",
               "--stacks", "1", "--feats", "16", "--input-size", "64x64", "--epochs", "1", "--batch-size", "4",
               "--workers", "0", "--threads", "1", "--no-progress", "-o", str(run)]
    done = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=1800)  # a hang guard: ~60 s idle, minutes under load
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 process(es)" in done.stdout and "bit-identical" in done.stdout
    log = json.loads((run / "log.jsonl").read_text())
    assert log["steps"] == 2  # 16 images / (2 processes x batch 4)
    verify_ternary_unchanged(load_model(run / "last.pt")[0])


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """A finished one-epoch run folder (state.pt + last.pt) to corrupt copies of."""
    run = tmp_path_factory.mktemp("run") / "run"
    train(_config(run, epochs=1), log=lambda _: None)
    return run


def _wrong_shape_state(path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["optimizer"]["param_groups"][0]["params"] = [0]  # another model's optimizer
    torch.save(state, path)


@pytest.mark.parametrize("damage", ["directory", "garbage", "a-list", "wrong-format", "wrong-shape"])
def test_resume_with_a_bad_state_is_one_line(one_epoch_run, tmp_path, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    state = run / "state.pt"
    if damage == "directory":
        state.unlink()
        state.mkdir()
    elif damage == "garbage":
        state.write_bytes(b"\x00garbage" * 100)
    elif damage == "a-list":
        torch.save([1, 2, 3], state)
    elif damage == "wrong-format":
        torch.save({"format": "something else"}, state)
    else:
        _wrong_shape_state(state)
    result = CliRunner().invoke(main, ["train", "--data", "synthetic:8,4", "-o", str(run), "--stacks", "2",
                                       "--modules", "1", "--feats", "16", "--input-size", "64x64", "--seed", "5",
                                       "--epochs", "2", "--batch-size", "4", "--lr-drops", "2", "--workers", "0",
                                       "--threads", "1", "--no-progress", "--resume"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert "start a new run" in result.output
    assert damage != "wrong-shape" or "does not fit" in result.output


def test_the_duration_estimate_leaves_model_and_random_streams_untouched():
    from lbdeploy.checkpoint import default_metadata
    from lbdeploy.data import open_dataset
    from lbdeploy.training.tasks import task_for
    from lbdeploy.training.trainer import _setup_distributed, duration_estimate

    config = _config("unused", epochs=250)
    task = task_for(config, open_dataset(config.data, "train", config.seed))
    model = task.build().train()
    train_set = task.training_set(default_metadata(model.config), (64, 64))
    before, rng = {k: v.clone() for k, v in model.state_dict().items()}, torch.get_rng_state()
    line = duration_estimate(model, task, train_set, config, _setup_distributed(), 250)
    assert line.startswith("About ") and "for 250 epochs" in line
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # BatchNorm statistics too
    assert torch.equal(torch.get_rng_state(), rng)


def test_init_starts_a_new_run_from_a_trained_model(tmp_path):
    first = train(_config(tmp_path / "first", epochs=1), log=lambda _: None)
    tuned = train(_config(tmp_path / "tuned", epochs=1, lr=1e-12, init=str(first.last)), log=lambda _: None)
    start, after = load_model(first.last)[0].state_dict(), load_model(tuned.last)[0].state_dict()
    fresh = build_model("lbrn-s", **{**TINY, "seed": 5}).state_dict()
    trainable = [k for k in start if k.endswith(".weight") and start[k].is_floating_point()]
    assert all(torch.allclose(start[k], after[k], atol=1e-6) for k in trainable)  # a tiny lr: the --init weights
    assert not all(torch.allclose(fresh[k], after[k], atol=1e-6) for k in trainable)  # not a fresh start
    with pytest.raises(ConfigError, match=r"--init .* other options \(feats"):
        train(_config(tmp_path / "other", model_options={**TINY, "feats": 32}, init=str(first.last)), log=lambda _: None)
