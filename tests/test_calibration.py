"""Fresh (untrained) models run sanely: BatchNorm statistics calibrated at creation (docs/models.md)."""

import pytest
import torch

from lbdeploy.models import build_model, create_model, get_preset, list_models
from lbdeploy.models.calibration import calibrate_batchnorm, calibration_images, synthetic_images
from lbdeploy.models.ternary import TernaryConv2d

POSE = [name for name in list_models() if "joints" in get_preset(name).config]
SIZE = 64
# docs/models.md: every heatmap value of an untrained, calibrated network lies within +-HEATMAP_BOUND
# (measured at 64x64: |value| <= 5.1 for every preset; without calibration an 8-stack LBRN-S reaches ~1e28).
HEATMAP_BOUND = 10.0


def _heatmaps(model, size=SIZE):
    generator = torch.Generator().manual_seed(123)  # other images than the calibration ones
    with torch.no_grad():
        return model(synthetic_images(2, size, size, generator))


@pytest.mark.parametrize("name, feats", [
    ("lbrn-s", 128), ("shn", 128),
    pytest.param("lbrn-s", 256, marks=pytest.mark.slow),  # the README's model, full width
])
def test_untrained_eight_stack_heatmaps_are_finite_and_moderate(name, feats):
    model = create_model(name, stacks=8, feats=feats, input_size=(SIZE, SIZE))
    heatmaps = _heatmaps(model)
    assert len(heatmaps) == 8
    for stack, out in enumerate(heatmaps):
        assert torch.isfinite(out).all(), f"stack {stack}"
        assert out.abs().max() <= HEATMAP_BOUND, f"stack {stack}: {float(out.abs().max())}"
        assert out.std() > 1e-3, f"stack {stack} is constant"  # not sane by being dead


@pytest.mark.parametrize("name", POSE)
def test_every_pose_preset_is_sane_untrained(name):
    heatmaps = _heatmaps(create_model(name, stacks=1, feats=64, input_size=(SIZE, SIZE)))
    assert all(torch.isfinite(out).all() and out.abs().max() <= HEATMAP_BOUND for out in heatmaps)


@pytest.mark.parametrize("name", ["resnet56", "resnet-lbb-56"])
def test_untrained_cifar_logits_are_moderate(name):
    logits = _heatmaps(create_model(name), size=32)
    assert torch.isfinite(logits).all() and logits.abs().max() <= HEATMAP_BOUND


def test_calibration_changes_only_batchnorm_statistics():
    built = build_model("lbrn-s", stacks=1, input_size=(SIZE, SIZE), seed=2)
    before = {k: v.clone() for k, v in built.state_dict().items()}
    rng_state = torch.get_rng_state()
    calibrated = calibrate_batchnorm(built)
    assert torch.equal(torch.get_rng_state(), rng_state)  # training's random stream is untouched
    assert not calibrated.training
    changed = {k for k, v in calibrated.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    assert all(m.momentum == 0.1 for m in calibrated.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert any(isinstance(m, TernaryConv2d) for m in calibrated.modules())


def test_create_model_is_deterministic():
    first = create_model("shn", stacks=1, input_size=(SIZE, SIZE))
    torch.manual_seed(99)  # the real convs' initial weights come from torch's RNG; copy them over
    second = build_model("shn", stacks=1, input_size=(SIZE, SIZE))
    second.load_state_dict({k: v for k, v in first.state_dict().items() if "running" not in k}, strict=False)
    calibrate_batchnorm(second, seed=0)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key


def test_calibration_covers_enough_pixels():
    assert calibration_images(64, 64) == 16 and calibration_images(256, 256) == 4
    assert calibration_images(32, 32) == 64
