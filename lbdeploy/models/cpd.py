"""CPD, the cascaded partial decoder for salient object detection (Wu et al., CVPR 2019), and CPD-LB.

Order: the conv unit, CPD's modules (RFB, aggregation, holistic attention), the backbones, the
network, the builder, then the registered presets.

Structure (Wu et al.; paper §4.4): a backbone (VGG16 or ResNet50) whose last two stages exist
twice. The attention branch runs the first copy, maps the three deepest features through a
receptive field block (RFB) each to `channels` channels and aggregates them (the partial decoder,
low-level features discarded) into an initial saliency map. Holistic attention (a 31x31 Gaussian
blur of that map, min-max normalized, max with the map) multiplies the shallowest of the three
features, which then runs the second copy of the late stages and a second RFB + aggregation:
the detection map. Both maps are upsampled to the input size.

CPD-LB (the paper's Table 10) is the same network with every 3x3 convolution after the stem
replaced by a local binary residual block (`block="lbb"`: 1x1 real -> 3x3 ternary -> 1x1 real,
c_m = c_out / 2). `block` takes any variant of lbdeploy.models.blocks.BLOCK_VARIANTS, or "plain"
for CPD's own convolutions (conv-BN). The 1x1 and the RFB's 1xk / kx1 strip convolutions stay
real; with the ResNet50 backbone the 3x3 inside its bottlenecks is the block's k x k conv.

Outputs (logits, before the sigmoid): in training mode [attention, detection], both [N, 1, H, W]
(CPD's loss supervises both); in eval mode [detection], the final map, which is what export keeps.

Inside the RFB and aggregation modules parameter names follow CPD's code (branch0..3, conv_cat,
conv_res, conv_upsample1..5, conv_concat2/3, conv4, conv5); blocks use lbdeploy's block names.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from lbdeploy.errors import ConfigError
from lbdeploy.models.blocks import BLOCK_VARIANTS, PreActBottleneck, block_layers
from lbdeploy.models.registry import register_model
from lbdeploy.models.ternary import init_ternary

PLAIN = "plain"  # CPD's own 3x3 convs (conv-BN), no residual block
BACKBONES = ("vgg16", "resnet50")
ATTENTION_KERNEL, ATTENTION_SIGMA = 31, 4.0  # holistic attention's Gaussian (CPD: gkern(31, 4))


class ConvBN(nn.Module):
    """CPD's BasicConv2d: conv (no bias) -> BN, optionally -> ReLU (the backbone's VGG units)."""

    def __init__(self, in_ch, out_ch, kernel_size=3, stride=1, dilation=1, relu=False):
        super().__init__()
        k = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
        padding = (dilation * (k[0] // 2), dilation * (k[1] // 2))
        self.conv = nn.Conv2d(in_ch, out_ch, k, stride, padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU() if relu else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return x if self.act is None else self.act(x)


def conv_unit(block: str, density: float, relu: bool = False):
    """The factory `make(in_ch, out_ch, kernel_size=3, dilation=1)` of CPD's conv units for `block`.

    A 3x3 unit becomes a PreActBottleneck of the variant (c_m = out_ch / 2) unless `block` is
    "plain"; every other kernel shape is a ConvBN.
    """
    layers = None if block == PLAIN else block_layers(block, density)

    def make(in_ch, out_ch, kernel_size=3, dilation=1):
        if layers is not None and kernel_size == 3:
            return PreActBottleneck(in_ch, out_ch, max(out_ch // 2, 1), layers, kernel_size=3, dilation=dilation)
        return ConvBN(in_ch, out_ch, kernel_size, dilation=dilation, relu=relu)

    return make


class RFB(nn.Module):
    """Receptive field block: four branches (1x1; 1xk, kx1 and a 3x3 dilated k, k = 3, 5, 7), concat,
    a 3x3 fusion and a 1x1 residual, then ReLU."""

    def __init__(self, make, in_ch, channels):
        super().__init__()
        self.branch0 = make(in_ch, channels, 1)
        for index, k in enumerate((3, 5, 7), start=1):
            setattr(self, f"branch{index}", nn.Sequential(
                make(in_ch, channels, 1), make(channels, channels, (1, k)), make(channels, channels, (k, 1)),
                make(channels, channels, 3, dilation=k)))
        self.conv_cat = make(4 * channels, channels, 3)
        self.conv_res = make(in_ch, channels, 1)

    def forward(self, x):
        branches = [getattr(self, f"branch{i}")(x) for i in range(4)]
        return F.relu(self.conv_cat(torch.cat(branches, 1)) + self.conv_res(x))


def _up2(x):
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


class Aggregation(nn.Module):
    """The partial decoder: fuses the deepest (x5), middle (x4) and shallow (x3) features of
    `channels` channels by upsampling and multiplication, and maps them to one logit map at x3's size."""

    def __init__(self, make, channels):
        super().__init__()
        c = channels
        self.conv_upsample1, self.conv_upsample2, self.conv_upsample3, self.conv_upsample4 = (make(c, c) for _ in range(4))
        self.conv_upsample5 = make(2 * c, 2 * c)
        self.conv_concat2 = make(2 * c, 2 * c)
        self.conv_concat3 = make(3 * c, 3 * c)
        self.conv4 = make(3 * c, 3 * c)
        self.conv5 = nn.Conv2d(3 * c, 1, 1)

    def forward(self, x5, x4, x3):
        x4_1 = self.conv_upsample1(_up2(x5)) * x4
        x3_1 = self.conv_upsample2(_up2(_up2(x5))) * self.conv_upsample3(_up2(x4)) * x3
        x4_2 = self.conv_concat2(torch.cat((x4_1, self.conv_upsample4(_up2(x5))), 1))
        x3_2 = self.conv_concat3(torch.cat((x3_1, self.conv_upsample5(_up2(x4_2))), 1))
        return self.conv5(self.conv4(x3_2))


def gaussian_kernel(size: int = ATTENTION_KERNEL, sigma: float = ATTENTION_SIGMA) -> torch.Tensor:
    """CPD's holistic-attention kernel [1, 1, size, size]: sqrt of the outer product of the normal
    distribution's mass over `size` equal bins of [-sigma - d/2, sigma + d/2] (d = (2 sigma + 1) / size),
    normalized to sum 1."""
    step = (2 * sigma + 1.0) / size
    edges = [-sigma - step / 2 + i * (2 * sigma + step) / size for i in range(size + 1)]
    cdf = torch.tensor([0.5 * (1 + math.erf(e / math.sqrt(2))) for e in edges], dtype=torch.float64)
    mass = cdf[1:] - cdf[:-1]
    kernel = torch.sqrt(torch.outer(mass, mass))
    return (kernel / kernel.sum()).float()[None, None]


class HolisticAttention(nn.Module):
    """x * max(minmax(blur(attention)), attention), the blur a trainable Gaussian-initialized conv."""

    def __init__(self):
        super().__init__()
        self.blur = nn.Conv2d(1, 1, ATTENTION_KERNEL, padding=ATTENTION_KERNEL // 2, bias=False)
        with torch.no_grad():
            self.blur.weight.copy_(gaussian_kernel())

    def forward(self, attention, x):
        soft = self.blur(attention)
        low = soft.amin(dim=(2, 3), keepdim=True)
        high = soft.amax(dim=(2, 3), keepdim=True)
        soft = (soft - low) / (high - low + 1e-8)
        return x * torch.maximum(soft, attention)


def vgg16_stages(make, width: int) -> tuple[list[nn.Module], list[int]]:
    """VGG16's five conv stages (2, 2, 3, 3, 3 convs; max-pool before stages 2-5), widths
    width x (1, 2, 4, 8, 8); the first conv is a real ConvBN-ReLU stem whatever the block."""
    widths = [width, 2 * width, 4 * width, 8 * width, 8 * width]
    stages, in_ch = [], 3
    for index, (count, out_ch) in enumerate(zip((2, 2, 3, 3, 3), widths)):
        units = [nn.MaxPool2d(2, 2)] if index else []
        for _ in range(count):
            units.append(ConvBN(in_ch, out_ch, 3, relu=True) if in_ch == 3 else make(in_ch, out_ch))
            in_ch = out_ch
        stages.append(nn.Sequential(*units))
    return stages, widths


def resnet50_stages(layers, width: int) -> tuple[list[nn.Module], list[int]]:
    """ResNet50 with pre-activation bottlenecks of `layers` (3, 4, 6, 3 blocks, c_m = width x
    (1, 2, 4, 8), outputs 4 c_m, stride 2 in the 3x3 of each later stage's first block) after a
    7x7/2 ConvBN-ReLU stem and a 3x3/2 max-pool; stage 1 holds the stem and layer1."""
    stem = [ConvBN(3, width, 7, stride=2, relu=True), nn.MaxPool2d(3, 2, padding=1)]
    stages, widths, in_ch = [], [], width
    for index, (count, mid) in enumerate(zip((3, 4, 6, 3), (width, 2 * width, 4 * width, 8 * width))):
        blocks = []
        for b in range(count):
            stride = 2 if (index > 0 and b == 0) else 1
            blocks.append(PreActBottleneck(in_ch, 4 * mid, mid, layers, kernel_size=3, stride=stride))
            in_ch = 4 * mid
        stages.append(nn.Sequential(*(stem if index == 0 else []), *blocks))
        widths.append(in_ch)
    return stages, widths


class CPDNet(nn.Module):
    """CPD: `shared` backbone stages up to the shallowest decoded feature, two copies of the two late
    stages, an RFB per decoded feature and an aggregation per branch, holistic attention between them.

    Args:
        shared: stages up to feature 3 (a Sequential); late_1, late_2: the two copies of stages 4, 5.
        feature_channels: channels of features 3, 4, 5; make: the conv unit factory (`conv_unit`).
        channels: decoder width (CPD: 32); stride: input pixels per pixel of feature 3.
    """

    def __init__(self, shared, late_1, late_2, feature_channels, make, channels: int, stride: int):
        super().__init__()
        self.shared = shared
        self.late_1, self.late_2 = late_1, late_2
        self.rfb_1 = nn.ModuleList(RFB(make, c, channels) for c in feature_channels)
        self.rfb_2 = nn.ModuleList(RFB(make, c, channels) for c in feature_channels)
        self.agg_1 = Aggregation(make, channels)
        self.agg_2 = Aggregation(make, channels)
        self.ha = HolisticAttention()
        self.stride = stride

    def _decode(self, x3, late, rfb, agg):
        x4 = late[0](x3)
        x5 = late[1](x4)
        return agg(rfb[2](x5), rfb[1](x4), rfb[0](x3))

    def _full_size(self, x):
        return F.interpolate(x, scale_factor=float(self.stride), mode="bilinear", align_corners=False)

    def forward(self, x):
        x3 = self.shared(x)
        attention = self._decode(x3, self.late_1, self.rfb_1, self.agg_1)
        detection = self._decode(self.ha(torch.sigmoid(attention), x3), self.late_2, self.rfb_2, self.agg_2)
        if self.training:
            return [self._full_size(attention), self._full_size(detection)]
        return [self._full_size(detection)]


def build_cpd(backbone="vgg16", block="lbb", width=64, channels=32, input_size=(352, 352), density=0.5, seed=0):
    """Build CPD / CPD-LB from a config (see the presets below for the keys)."""
    if backbone not in BACKBONES:
        raise ConfigError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    if block != PLAIN and block not in BLOCK_VARIANTS:
        raise ConfigError(f"block must be {PLAIN!r} or one of {sorted(BLOCK_VARIANTS)}, got {block!r}")
    if width < 2 or channels < 2:
        raise ConfigError(f"width and channels must be >= 2 (got {width}, {channels})")
    unit = 16 if backbone == "vgg16" else 32
    h, w = input_size
    if h % unit or w % unit or h <= 0 or w <= 0:
        raise ConfigError(f"input size {h}x{w} must be positive multiples of {unit} for {backbone} (e.g. 352x352)")
    make = conv_unit(block, density)
    if backbone == "vgg16":
        build_stages, stride = partial(vgg16_stages, conv_unit(block, density, relu=True), width), 4
    else:
        build_stages, stride = partial(resnet50_stages, block_layers("dense" if block == PLAIN else block, density), width), 8
    stages, widths = build_stages()
    late_2 = build_stages()[0][-2:]
    model = CPDNet(nn.Sequential(*stages[:-2]), nn.ModuleList(stages[-2:]), nn.ModuleList(late_2),
                   widths[-3:], make, channels, stride)
    init_ternary(model, seed)
    return model


_CPD = dict(backbone="vgg16", block=PLAIN, width=64, channels=32, input_size=(352, 352), density=0.5, seed=0)
register_model("cpd", build_cpd, "CPD saliency network, real-valued (Wu et al.; backbone vgg16 or resnet50)", **_CPD)
register_model("cpd-lb", build_cpd, "CPD-LB: CPD with its 3x3 convs as LBB blocks (Table 10)", **{**_CPD, "block": "lbb"})
