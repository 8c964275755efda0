"""model.pt: round trip, safe loading (hostile, pickled-module, corrupt, truncated), pytorch-pose import."""

from pathlib import Path

import pytest
import torch

from lbdeploy.checkpoint import FORMAT, load_checkpoint, load_model, save_checkpoint
from lbdeploy.errors import CheckpointError, TernaryWeightError
from lbdeploy.models import build_model
from lbdeploy.models.ternary import TernaryConv2d


@pytest.fixture(scope="module")
def small_model():
    return build_model("lbrn-s", stacks=2, input_size=(64, 64), density=0.3, seed=4)


def test_round_trip(tmp_path, small_model):
    path = save_checkpoint(tmp_path / "m.pt", small_model)
    model, ckpt = load_model(path)
    assert ckpt.arch == "lbrn-s" and ckpt.config["density"] == 0.3 and ckpt.config["stacks"] == 2
    assert ckpt.metadata["joints"][0] == "r_ankle" and len(ckpt.metadata["flip_pairs"]) == 6
    assert ckpt.metadata["input_size"] == [64, 64] and len(ckpt.metadata["mean"]) == 3
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(small_model(x), model(x)))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["format_version"] == 1


def test_trained_values_survive(tmp_path, small_model):
    with torch.no_grad():
        small_model.score[0].bias.add_(1.5)
    model, _ = load_model(save_checkpoint(tmp_path / "m.pt", small_model))
    assert torch.equal(model.score[0].bias, small_model.score[0].bias)


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": _Hostile(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_pickled_module_is_refused(tmp_path, small_model):
    torch.save(small_model, tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(tmp_path / "module.pt")


def test_truncated_and_corrupt_files(tmp_path, small_model):
    good = save_checkpoint(tmp_path / "m.pt", small_model).read_bytes()
    (tmp_path / "trunc.pt").write_bytes(good[: len(good) // 3])
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint at all")
    for name in ("trunc.pt", "junk.pt"):
        with pytest.raises(CheckpointError, match="corrupt"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_non_ternary_weights_in_checkpoint(tmp_path, small_model):
    path = save_checkpoint(tmp_path / "m.pt", small_model)
    data = torch.load(path, weights_only=True)
    key = next(k for k, v in data["state_dict"].items() if v.dtype == torch.int8)
    data["state_dict"][key] = data["state_dict"][key].float() * 0.5
    torch.save(data, path)
    with pytest.raises(TernaryWeightError):
        load_model(path)


def test_shape_mismatch_is_a_checkpoint_error(tmp_path, small_model):
    path = save_checkpoint(tmp_path / "m.pt", small_model)
    data = torch.load(path, weights_only=True)
    data["config"]["feats"] = 128
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path)


def _pytorch_pose_state(model, ternary_float=True):
    """A state_dict as bearpaw/pytorch-pose saves it: 'module.' prefix, float 3x3 weights with bias."""
    sd = {}
    for key, value in model.state_dict().items():
        if value.dtype == torch.int8 and ternary_float:
            value = value.float()
            sd["module." + key.replace("conv2.weight", "conv2.bias")] = torch.full((value.shape[0],), 0.25)
        sd["module." + key] = value
    return {"epoch": 3, "arch": "hg", "state_dict": sd}


def test_pytorch_pose_import_as_lbrn_s(tmp_path):
    model = build_model("lbrn-s", stacks=2, input_size=(256, 256), seed=9)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    torch.save(_pytorch_pose_state(model), tmp_path / "hg.pth.tar")
    imported, ckpt = load_model(tmp_path / "hg.pth.tar")
    assert ckpt.arch == "lbrn-s" and ckpt.config["stacks"] == 2 and ckpt.metadata["imported_from"] == "pytorch-pose"
    # the 0.25 conv2 bias was folded into bn3's running mean: outputs equal the model with that bias
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, TernaryConv2d):
                parent = model.get_submodule(name.rsplit(".", 1)[0])
                parent.bn3.running_mean -= 0.25
        x = torch.randn(1, 3, 256, 256)
        assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(model(x), imported(x)))


def test_pytorch_pose_import_dense_as_shn(tmp_path):
    model = build_model("shn", stacks=1, input_size=(256, 256))
    torch.save({"state_dict": {k: v for k, v in model.state_dict().items()}}, tmp_path / "shn.pth")
    imported, ckpt = load_model(tmp_path / "shn.pth")
    assert ckpt.arch == "shn"
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.allclose(model(x)[0], imported(x)[0])


def test_unknown_dict_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an lbdeploy model.pt"):
        load_checkpoint(tmp_path / "other.pt")


# --- bare state_dicts: refused by load, converted by `lbdeploy import` ------------------------------

def test_bare_state_dict_refusal_names_the_import_command(tmp_path, small_model):
    torch.save(small_model.state_dict(), tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match=r"bare state_dict.*lbdeploy import .*weights.pth ARCH"):
        load_checkpoint(tmp_path / "weights.pth")


def test_import_state_dict_round_trips_the_network(tmp_path, small_model):
    from lbdeploy.checkpoint import import_state_dict

    with torch.no_grad():
        small_model.score[1].bias.add_(0.75)  # a "trained" value
    torch.save({"module." + k: v for k, v in small_model.state_dict().items()}, tmp_path / "dp.pth")  # DataParallel
    imported = import_state_dict(tmp_path / "dp.pth", "lbrn-s", stacks=2, input_size=(64, 64), density=0.3, seed=4)
    model, ckpt = load_model(save_checkpoint(tmp_path / "m.pt", imported, {"imported_from": "state_dict"}))
    assert ckpt.arch == "lbrn-s" and ckpt.config["stacks"] == 2 and ckpt.metadata["imported_from"] == "state_dict"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(small_model(x), model(x)))


def test_import_with_wrong_options_says_what_differs(tmp_path, small_model):
    from lbdeploy.checkpoint import import_state_dict

    torch.save(small_model.state_dict(), tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match=r"built with stacks=1, input_size=\(64, 64\): \d+ unexpected keys "
                                              r"\(e.g. hg\.1\..*--stacks"):
        import_state_dict(tmp_path / "weights.pth", "lbrn-s", stacks=1, input_size=(64, 64))
    with pytest.raises(CheckpointError, match=r"keys of another shape \(e.g. layer1\.0\.conv1\.weight: \[64, 64, 1, 1\] in the file, \[32, 64, 1, 1\]"):
        import_state_dict(tmp_path / "weights.pth", "lbrn-s", stacks=2, feats=128, input_size=(64, 64))
    save_checkpoint(tmp_path / "m.pt", small_model)
    with pytest.raises(CheckpointError, match="already an lbdeploy model.pt"):
        import_state_dict(tmp_path / "m.pt", "lbrn-s")


def test_model_pt_mode_follows_the_umask(tmp_path, small_model):
    import os

    previous = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "m.pt", small_model)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644  # as any file the user creates, not mkstemp's 0600


@pytest.mark.parametrize("change, words", [
    (lambda d: d["config"].update(feats=400000), "feats=400000"),
    (lambda d: d["config"].update(stacks=10 ** 9), "stacks"),
    (lambda d: d["config"].update(input_size=[100000, 100000]), "input_size"),
    (lambda d: d["metadata"].update(mean=["0.5", "0.5", "0.5"]), "mean"),
    (lambda d: d["metadata"].update(joints=["a", "b", "c"]), "3 joints"),
])
def test_absurd_config_is_refused_before_anything_is_built(tmp_path, change, words):
    """A tiny safe-to-load checkpoint whose config describes a gigantic network: one line, no allocation."""
    data = {"format": FORMAT, "format_version": 1, "arch": "lbrn-s",
            "config": {"stacks": 1, "feats": 16, "joints": 16, "input_size": [64, 64]},
            "state_dict": {}, "metadata": {"task": "pose", "input_size": [64, 64], "mean": [0, 0, 0], "std": [1, 1, 1]}}
    change(data)
    torch.save(data, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=words):
        load_model(tmp_path / "m.pt")
def test_import_checks_seed_and_density_against_the_ternary_weights(tmp_path, small_model):
    from lbdeploy.checkpoint import import_state_dict

    torch.save(small_model.state_dict(), tmp_path / "weights.pth")  # drawn with seed 4 at density 0.3
    imported = import_state_dict(tmp_path / "weights.pth", "lbrn-s", stacks=2, input_size=(64, 64), seed=4)
    assert imported.config["density"] == 0.3 and imported.config["seed"] == 4  # the density comes from the file
    with pytest.raises(CheckpointError, match=r"not the draw of seed 5 at density 0.3 \(\d+ of \d+ layers differ.*--seed"):
        import_state_dict(tmp_path / "weights.pth", "lbrn-s", stacks=2, input_size=(64, 64), seed=5)
    with pytest.raises(CheckpointError, match=r"not the draw of seed 0"):  # the preset's seed, not the file's
        import_state_dict(tmp_path / "weights.pth", "lbrn-s", stacks=2, input_size=(64, 64))
    with pytest.raises(CheckpointError, match=r"do not have density 0.1 .*--density"):
        import_state_dict(tmp_path / "weights.pth", "lbrn-s", stacks=2, input_size=(64, 64), seed=4, density=0.1)
