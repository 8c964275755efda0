"""Bottleneck ResNet-56 for 32x32 CIFAR images (paper Fig. 7) and ResNet-LBB-56.

Order: the network, the builder, then the registered presets.

A 3x3 stem conv with 16 channels, three stages of 6 pre-activation bottlenecks
({1x1, c}, {3x3, c}, {1x1, 4c} with c = 16, 32, 64; stages 2 and 3 downsample by 2),
a final BN-ReLU, global average pooling and a fully connected classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from lbdeploy.errors import ConfigError
from lbdeploy.models.blocks import ACTIVATIONS, PreActBottleneck, block_layers
from lbdeploy.models.registry import register_model
from lbdeploy.models.ternary import init_ternary


class CifarResNet(nn.Module):
    """Pre-activation bottleneck ResNet for CIFAR; returns class logits [N, classes]."""

    def __init__(self, make_block, widths=(16, 32, 64), blocks_per_stage=6, expansion=4, classes=10, act_layer=nn.ReLU):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        in_ch = widths[0]
        stages = []
        for index, width in enumerate(widths):
            out_ch = width * expansion
            blocks = []
            for b in range(blocks_per_stage):
                stride = 2 if (index > 0 and b == 0) else 1
                blocks.append(make_block(in_ch, out_ch, width, stride))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn_final = nn.BatchNorm2d(in_ch)
        self.act = act_layer()
        self.fc = nn.Linear(in_ch, classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = torch.flatten(torch.mean(self.act(self.bn_final(x)), dim=(2, 3), keepdim=True), 1)
        return self.fc(x)


def build_cifar_resnet(classes=10, block="lbb", density=0.5, seed=0, input_size=(32, 32), act="relu",
                       blocks_per_stage=6):
    """Build the bottleneck ResNet-56 (or its LBB version) from a config."""
    if classes < 2:
        raise ConfigError(f"classes must be >= 2, got {classes}")
    if act not in ACTIVATIONS:
        raise ConfigError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    h, w = input_size
    if h % 4 or w % 4 or h <= 0 or w <= 0:
        raise ConfigError(f"input size {h}x{w} must be positive multiples of 4 (CIFAR: 32x32)")
    layers = block_layers(block, density)

    def make_block(in_ch, out_ch, mid, stride):
        return PreActBottleneck(in_ch, out_ch, mid, layers, kernel_size=3, stride=stride, act_layer=ACTIVATIONS[act])

    model = CifarResNet(make_block, classes=classes, act_layer=ACTIVATIONS[act], blocks_per_stage=blocks_per_stage)
    init_ternary(model, seed)
    return model


_RESNET56 = dict(classes=10, block="dense", density=0.5, seed=0, input_size=(32, 32), act="relu", blocks_per_stage=6)
register_model("resnet56", build_cifar_resnet, "bottleneck ResNet-56 for CIFAR (paper Fig. 7)", **_RESNET56)
register_model("resnet-lbb-56", build_cifar_resnet, "ResNet-LBB-56: ResNet-56 with LBB blocks", **{**_RESNET56, "block": "lbb"})
