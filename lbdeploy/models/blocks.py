"""Pre-activation residual blocks (BN -> activation -> conv, paper Fig. 1) and their LBRN variants.

One block class serves the dense bottleneck and LBB: the k x k conv is a `spatial_layer` handed in
(a real `nn.Conv2d` or a fixed `TernaryConv2d`), the 1x1 convs a `pointwise_layer`. The block
variants of the paper's ablations (Tables 3, 4, 6) are named in `BLOCK_VARIANTS` and turned into
layer choices by `block_layers`.

Parameter names (bn1/conv1, bn2/conv2, bn3/conv3, downsample.0) are the checkpoint format and match
the bearpaw/pytorch-pose hourglass, so its checkpoints import without renaming.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from lbdeploy.errors import ConfigError
from lbdeploy.models.ternary import HalfTernaryConv2d, TernaryConv2d

ConvFactory = Callable[..., nn.Module]

# name -> what the paper calls it
BLOCK_VARIANTS = {
    "dense": "real-valued bottleneck (SHN / PRM)",
    "lbb": "LBB: 1x1 real -> k x k ternary -> 1x1 real",
    "lbb1": "LBB-1: one 1x1 only (k x k ternary -> 1x1 real), Table 3",
    "no_spatial": "LBRN-1: k x k conv removed (1x1 -> 1x1), Table 4",
    "binary_pointwise": "LBRN-2: 1x1 convs ternary, k x k real, Table 4",
    "half_ternary": "LBRN-3: half of the k x k filters ternary, Table 4",
}
ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}


@dataclass(frozen=True)
class BlockLayers:
    """The layer choices that make one block variant."""

    spatial: Optional[ConvFactory]  # None: no k x k conv
    pointwise: ConvFactory
    first_pointwise: bool  # False: LBB-1 (the k x k conv reads the block input)


def real_conv(in_ch, out_ch, kernel_size=1, stride=1, padding=None, bias=True, dilation=1):
    """A real-valued conv with 'same' padding by default."""
    padding = dilation * (kernel_size // 2) if padding is None else padding
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, dilation=dilation, bias=bias)


def ternary_conv(in_ch, out_ch, kernel_size=3, stride=1, padding=None, density=0.5, dilation=1):
    """A fixed ternary conv (weights drawn later by `init_ternary`)."""
    return TernaryConv2d(in_ch, out_ch, kernel_size, stride, padding, dilation, density=density)


def block_layers(variant: str, density: float) -> BlockLayers:
    """Layer factories for a block variant of `BLOCK_VARIANTS`."""
    ternary = partial(ternary_conv, density=density)
    if variant == "dense":
        return BlockLayers(real_conv, real_conv, True)
    if variant == "lbb":
        return BlockLayers(ternary, real_conv, True)
    if variant == "lbb1":
        return BlockLayers(ternary, real_conv, False)
    if variant == "no_spatial":
        return BlockLayers(None, real_conv, True)
    if variant == "binary_pointwise":
        return BlockLayers(real_conv, ternary, True)
    if variant == "half_ternary":
        return BlockLayers(partial(HalfTernaryConv2d, density=density), real_conv, True)
    raise ConfigError(f"unknown block variant {variant!r}; choose one of {sorted(BLOCK_VARIANTS)}")


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: [BN-act-1x1] -> [BN-act-kxk] -> [BN-act-1x1] + skip.

    Args:
        in_ch, out_ch: block input and output channels.
        mid_ch: width of the inner convs (the paper's c_m, "number of 1x1 filters").
        layers: the variant's layer choices (`block_layers`).
        kernel_size, stride: of the k x k conv (stride also on the skip projection).
        act_layer: activation module class (ReLU or Sigmoid).
        dilation: of the k x k conv ('same' padding keeps the map size at stride 1).
    The skip is a 1x1 projection (`downsample`) when channels or stride change.
    """

    def __init__(self, in_ch, out_ch, mid_ch, layers: BlockLayers, kernel_size=3, stride=1, act_layer=nn.ReLU,
                 dilation=1):
        super().__init__()
        self.act = act_layer()
        width = in_ch
        if layers.first_pointwise:
            self.bn1 = nn.BatchNorm2d(in_ch)
            self.conv1 = layers.pointwise(in_ch, mid_ch, 1)
            width = mid_ch
        if layers.spatial is not None:
            self.bn2 = nn.BatchNorm2d(width)
            self.conv2 = layers.spatial(width, mid_ch, kernel_size, stride, dilation=dilation)
            width = mid_ch
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = layers.pointwise(width, out_ch, 1, stride if layers.spatial is None else 1)
        self.downsample = None
        if in_ch != out_ch or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=True))

    def stage(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """BN -> activation -> conv of stage `index` (1, 2 or 3), or x when the stage is absent."""
        bn = getattr(self, f"bn{index}", None)
        if bn is None:
            return x
        return getattr(self, f"conv{index}")(self.act(bn(x)))

    def forward(self, x):
        out = self.stage(self.stage(self.stage(x, 1), 2), 3)
        skip = x if self.downsample is None else self.downsample(x)
        return out + skip


def pyramid_ratios(cardinality: int) -> list[float]:
    """Subsampling ratios 2^(-c/C), c = 1..C, of the pyramid branch (paper Eq. 1 with M = 1)."""
    return [2.0 ** (-c / cardinality) for c in range(1, cardinality + 1)]


def fractional_max_pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Deterministic overlapping fractional max-pooling (Graham 2014) to `size`, for ratios in [1/2, 1].

    Output row i takes the max of the 2x2 window at row a_i = floor(i * H / OH) (likewise columns):
    a fixed pseudo-random sequence, so inference is deterministic and exports to ONNX as
    Pad + MaxPool + Gather.
    """
    h, w = x.shape[-2:]
    if not (h / 2 <= size[0] <= h and w / 2 <= size[1] <= w):
        raise ConfigError(f"fractional max-pooling supports ratios in [1/2, 1]; asked {h}x{w} -> {size}")
    pooled = F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, stride=1)
    rows = torch.tensor([i * h // size[0] for i in range(size[0])], device=x.device)
    cols = torch.tensor([j * w // size[1] for j in range(size[1])], device=x.device)
    return pooled.index_select(2, rows).index_select(3, cols)


class PyramidBottleneck(PreActBottleneck):
    """Pyramid residual module, PRM-B style (Yang et al.; paper Fig. 1c).

    Three branches: identity (skip), the bottleneck branch (bn1/conv1 -> bn2/conv2) and a pyramid
    branch: a shared 1x1 reduction to `pyramid_ch`, then for each of C scales a resize to ratio
    2^(-c/C) (deterministic fractional max-pooling, or bilinear resize), BN-act-k x k conv, resize
    back; the scales are summed, mapped by BN-act-1x1 to `mid_ch` and added to the bottleneck
    branch before bn3/conv3.
    """

    def __init__(self, in_ch, out_ch, mid_ch, layers: BlockLayers, kernel_size=3, stride=1, act_layer=nn.ReLU,
                 cardinality=4, pyramid_ch=None, pool="fractional"):
        if layers.spatial is None or not layers.first_pointwise or stride != 1:
            raise ConfigError("pyramid blocks need the full bottleneck (both 1x1 convs and a k x k conv), stride 1")
        super().__init__(in_ch, out_ch, mid_ch, layers, kernel_size, 1, act_layer)
        if pool not in ("fractional", "bilinear"):
            raise ConfigError(f"pyramid pool must be 'fractional' or 'bilinear', got {pool!r}")
        pyramid_ch = pyramid_ch or max(mid_ch // cardinality, 1)
        self.pool = pool
        self.ratios = pyramid_ratios(cardinality)
        self.pyr_conv1 = layers.pointwise(in_ch, pyramid_ch, 1)
        self.pyr_bns = nn.ModuleList(nn.BatchNorm2d(pyramid_ch) for _ in self.ratios)
        self.pyr_convs = nn.ModuleList(layers.spatial(pyramid_ch, pyramid_ch, kernel_size, 1) for _ in self.ratios)
        self.pyr_bn_out = nn.BatchNorm2d(pyramid_ch)
        self.pyr_conv_out = layers.pointwise(pyramid_ch, mid_ch, 1)

    def _resize(self, x, size):
        if self.pool == "fractional":
            return fractional_max_pool(x, size)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def forward(self, x):
        pre = self.act(self.bn1(x))
        main = self.conv2(self.act(self.bn2(self.conv1(pre))))
        reduced = self.pyr_conv1(pre)
        h, w = x.shape[-2:]
        pyramid = 0
        for ratio, bn, conv in zip(self.ratios, self.pyr_bns, self.pyr_convs):
            size = (max(int(h * ratio), 1), max(int(w * ratio), 1))
            scaled = conv(self.act(bn(self._resize(reduced, size))))
            pyramid = pyramid + F.interpolate(scaled, size=(h, w), mode="bilinear", align_corners=False)
        main = main + self.pyr_conv_out(self.act(self.pyr_bn_out(pyramid)))
        out = self.conv3(self.act(self.bn3(main)))
        skip = x if self.downsample is None else self.downsample(x)
        return out + skip
