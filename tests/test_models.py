"""Every registered preset builds, runs and has the documented structure."""

import pytest
import torch

from lbdeploy.errors import ConfigError
from lbdeploy.models import build_model, get_preset, list_models
from lbdeploy.models.blocks import PyramidBottleneck, fractional_max_pool, pyramid_ratios
from lbdeploy.models.ternary import HalfTernaryConv2d, TernaryConv2d

POSE = [name for name in list_models() if "joints" in get_preset(name).config]
SMALL = dict(stacks=2, input_size=(64, 64))


@pytest.mark.parametrize("name", POSE)
def test_pose_presets_return_heatmaps_of_every_stack(name):
    model = build_model(name, **SMALL)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert isinstance(out, list) and len(out) == 2
    assert all(o.shape == (2, 16, 16, 16) for o in out)
    assert model.config["arch"] == name


@pytest.mark.parametrize("name", ["resnet56", "resnet-lbb-56"])
@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_resnet_logits(name, classes):
    model = build_model(name, classes=classes)
    with torch.no_grad():
        assert model(torch.randn(3, 3, 32, 32)).shape == (3, classes)
    blocks = [m for m in model.modules() if m.__class__.__name__ == "PreActBottleneck"]
    assert len(blocks) == 18  # 3 stages x 6 bottlenecks, 56 = 18 * 3 + 2


@pytest.mark.parametrize("stacks", [1, 8])
def test_stack_count_and_lsp_joints(stacks):
    model = build_model("lbrn-s", stacks=stacks, joints=14, input_size=(64, 128))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 128))
    assert len(out) == stacks and out[-1].shape == (1, 14, 16, 32)


def test_default_lbrn_s_is_the_paper_network():
    model = build_model("lbrn-s")
    assert model.config["stacks"] == 8 and model.config["feats"] == 256 and model.config["input_size"] == (256, 256)
    ternary = [m for m in model.modules() if isinstance(m, TernaryConv2d)]
    assert ternary and all(m.kernel_size == (3, 3) and m.in_channels in (64, 128) for m in ternary)
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules())


@pytest.mark.parametrize("name,ternary_kernel", [("lbrn-s", (3, 3)), ("lbrn-s-5x5", (5, 5)), ("lbrn-2", (1, 1))])
def test_variant_layer_choices(name, ternary_kernel):
    model = build_model(name, stacks=1, input_size=(64, 64))
    kernels = {m.kernel_size for m in model.modules() if isinstance(m, TernaryConv2d)}
    assert kernels == {ternary_kernel}


def test_ablation_structures():
    no3 = build_model("lbrn-1", stacks=1, input_size=(64, 64))
    assert not any(isinstance(m, TernaryConv2d) for m in no3.modules())
    lbb1 = build_model("lbrn-s-lbb1", stacks=1, input_size=(64, 64))
    block = lbb1.res[0][0]
    assert not hasattr(block, "conv1") and isinstance(block.conv2, TernaryConv2d) and block.conv2.in_channels == 256
    half = build_model("lbrn-3", stacks=1, input_size=(64, 64))
    assert any(isinstance(m, HalfTernaryConv2d) for m in half.modules())
    sig = build_model("lbrn-s-sigmoid", stacks=1, input_size=(64, 64))
    assert isinstance(sig.res[0][0].act, torch.nn.Sigmoid)
    wide = build_model("lbrn-s-mid256", stacks=1, input_size=(64, 64))
    assert wide.res[0][0].conv1.out_channels == 256


def test_pyramid_block_scales():
    model = build_model("lbrn-p", stacks=1, input_size=(64, 64))
    blocks = [m for m in model.modules() if isinstance(m, PyramidBottleneck)]
    assert blocks and len(blocks[0].pyr_convs) == 4
    assert pyramid_ratios(4) == pytest.approx([2 ** -0.25, 2 ** -0.5, 2 ** -0.75, 0.5])


def test_fractional_max_pool_takes_window_maxima():
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    out = fractional_max_pool(x, (5, 6))
    assert out.shape == (1, 1, 5, 6)
    # rows a_i = floor(i * 8 / 5) = 0,1,3,4,6; values increase, so the max is the window's bottom-right
    assert out[0, 0, 0, 0] == x[0, 0, 1, 1] and out[0, 0, 4, 5] == x[0, 0, 7, 7]


@pytest.mark.parametrize("overrides,match", [
    ({"stacks": 9}, "stacks"), ({"input_size": (100, 100)}, "multiples of 64"), ({"joints": 17}, "joints"),
    ({"bogus": 1}, "no option"), ({"block": "nope"}, "unknown block"),
])
def test_bad_configs_are_refused(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_model("lbrn-s", **overrides)


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError, match="lbrn-s"):
        build_model("nope")
