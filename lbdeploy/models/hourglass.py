"""Stacked hourglass networks: SHN, LBRN-S, PRM, LBRN-P and the paper's ablations.

Order: the hourglass module, the stacked network, the builder, then the registered presets.

Structure (Newell et al.; paper Fig. 2): a 7x7/2 stem conv, residual blocks and a 2x2 max-pool take
the image to 1/4 resolution with `feats` channels; each stack is a depth-4 hourglass (max-pool down,
nearest x2 up, a residual branch at every scale), `modules` residual blocks, a 1x1 conv-BN-ReLU
head and a 1x1 score conv producing `joints` heatmaps; intermediate supervision feeds the heatmaps
back through 1x1 convs into the next stack. `forward` returns the heatmaps of every stack.
"""

from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from torch import nn

from lbdeploy.errors import ConfigError
from lbdeploy.models.blocks import ACTIVATIONS, PreActBottleneck, PyramidBottleneck, block_layers
from lbdeploy.models.registry import register_model
from lbdeploy.models.ternary import init_ternary

HEATMAP_STRIDE = 4


class Hourglass(nn.Module):
    """One hourglass of `depth` levels; `hg[level]` holds the residual branches of that level
    (up, low1, low3, and at the innermost level low2)."""

    def __init__(self, make_residual, depth: int):
        super().__init__()
        self.depth = depth
        self.hg = nn.ModuleList(
            nn.ModuleList(make_residual() for _ in range(4 if level == 0 else 3)) for level in range(depth)
        )

    def _forward(self, level: int, x):
        up1 = self.hg[level - 1][0](x)
        low1 = self.hg[level - 1][1](F.max_pool2d(x, 2, stride=2))
        low2 = self._forward(level - 1, low1) if level > 1 else self.hg[0][3](low1)
        low3 = self.hg[level - 1][2](low2)
        return up1 + F.interpolate(low3, scale_factor=2.0, mode="nearest")

    def forward(self, x):
        return self._forward(self.depth, x)


class HourglassNet(nn.Module):
    """Stacked hourglass network returning a list of heatmaps [N, joints, H/4, W/4], one per stack."""

    def __init__(self, make_block, stacks: int, modules: int, feats: int, joints: int, depth: int = 4):
        super().__init__()
        self.stacks = stacks
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=True)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(make_block(64, feats // 2))
        self.maxpool = nn.MaxPool2d(2, stride=2)
        self.layer2 = nn.Sequential(make_block(feats // 2, feats // 2))
        self.layer3 = nn.Sequential(make_block(feats // 2, feats))

        def residual(count=modules):
            return nn.Sequential(*(make_block(feats, feats) for _ in range(count)))

        self.hg = nn.ModuleList(Hourglass(residual, depth) for _ in range(stacks))
        self.res = nn.ModuleList(residual() for _ in range(stacks))
        self.fc = nn.ModuleList(
            nn.Sequential(nn.Conv2d(feats, feats, 1, bias=True), nn.BatchNorm2d(feats), nn.ReLU()) for _ in range(stacks)
        )
        self.score = nn.ModuleList(nn.Conv2d(feats, joints, 1, bias=True) for _ in range(stacks))
        self.fc_ = nn.ModuleList(nn.Conv2d(feats, feats, 1, bias=True) for _ in range(stacks - 1))
        self.score_ = nn.ModuleList(nn.Conv2d(joints, feats, 1, bias=True) for _ in range(stacks - 1))

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.maxpool(self.layer1(x))))
        heatmaps = []
        for i in range(self.stacks):
            y = self.fc[i](self.res[i](self.hg[i](x)))
            score = self.score[i](y)
            heatmaps.append(score)
            if i < self.stacks - 1:
                x = x + self.fc_[i](y) + self.score_[i](score)
        return heatmaps


def build_hourglass(stacks=8, modules=1, feats=256, mid=None, joints=16, input_size=(256, 256), block="lbb",
                    pyramid=False, cardinality=4, pool="fractional", density=0.5, seed=0, kernel_size=3,
                    act="relu", depth=4):
    """Build a stacked hourglass network from a config (see the presets below for the keys)."""
    if not 1 <= stacks <= 8:
        raise ConfigError(f"stacks must be between 1 and 8, got {stacks}")
    if modules < 1 or feats < 4 or feats % 2:
        raise ConfigError(f"modules must be >= 1 and feats an even number >= 4 (got {modules}, {feats})")
    if joints not in (14, 16):
        raise ConfigError(f"joints must be 16 (MPII) or 14 (LSP), got {joints}")
    unit = HEATMAP_STRIDE * 2 ** depth
    h, w = input_size
    if h % unit or w % unit or h <= 0 or w <= 0:
        raise ConfigError(f"input size {h}x{w} must be positive multiples of {unit} (e.g. 256x256)")
    if act not in ACTIVATIONS:
        raise ConfigError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    if kernel_size % 2 == 0:
        raise ConfigError(f"kernel_size must be odd, got {kernel_size}")
    layers = block_layers(block, density)
    block_cls = partial(PyramidBottleneck, cardinality=cardinality, pool=pool) if pyramid else PreActBottleneck

    def make_block(in_ch, out_ch):
        width = mid if (mid and out_ch == feats) else out_ch // 2
        return block_cls(in_ch, out_ch, width, layers, kernel_size=kernel_size, act_layer=ACTIVATIONS[act])

    model = HourglassNet(make_block, stacks, modules, feats, joints, depth)
    init_ternary(model, seed)
    return model


_SHN = dict(stacks=8, modules=1, feats=256, mid=None, joints=16, input_size=(256, 256), block="dense",
            pyramid=False, cardinality=4, pool="fractional", density=0.5, seed=0, kernel_size=3, act="relu", depth=4)
_LBRN_S = {**_SHN, "block": "lbb"}
_PRM = {**_SHN, "stacks": 2, "pyramid": True}
_LBRN_P = {**_PRM, "block": "lbb"}

register_model("shn", build_hourglass, "stacked hourglass network, real-valued (Newell et al.)", **_SHN)
register_model("lbrn-s", build_hourglass, "LBRN-S: stacked hourglass with LBB blocks", **_LBRN_S)
register_model("prm", build_hourglass, "pyramid residual module network, real-valued, 2 stacks", **_PRM)
register_model("lbrn-p", build_hourglass, "LBRN-P: pyramid residual modules with LBB, 2 stacks", **_LBRN_P)
# Ablations of the paper (Tables 3, 4, 6): LBRN-S with one block variant changed.
register_model("lbrn-s-lbb1", build_hourglass, "Table 3 LBB-1: one 1x1 conv only", **{**_LBRN_S, "block": "lbb1", "mid": 256})
register_model("lbrn-s-mid256", build_hourglass, "Table 3: 256 1x1 filters", **{**_LBRN_S, "mid": 256})
register_model("lbrn-s-mid64", build_hourglass, "Table 3: 64 1x1 filters", **{**_LBRN_S, "mid": 64})
register_model("lbrn-1", build_hourglass, "Table 4 LBRN-1: 3x3 convs removed", **{**_LBRN_S, "block": "no_spatial"})
register_model("lbrn-2", build_hourglass, "Table 4 LBRN-2: 1x1 ternary, 3x3 real", **{**_LBRN_S, "block": "binary_pointwise"})
register_model("lbrn-3", build_hourglass, "Table 4 LBRN-3: half of the 3x3 filters ternary", **{**_LBRN_S, "block": "half_ternary"})
register_model("lbrn-s-sigmoid", build_hourglass, "Table 6: sigmoid instead of ReLU", **{**_LBRN_S, "act": "sigmoid"})
register_model("lbrn-s-5x5", build_hourglass, "LBB with 5x5 ternary filters (Eq. 6 ratio 7.25)", **{**_LBRN_S, "kernel_size": 5})
