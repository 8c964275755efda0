"""Per-layer and total cost of a network in the paper's conventions.

- trainable parameters: every parameter with requires_grad (conv/linear weights and biases, BN);
- fixed parameters: the ternary weights (buffers), with their density;
- FLOPs (paper Eq. 7 without the bias term): 2 * OH * OW * (Cin/groups) * kH * kW * Cout for real
  convs, 2 * in * out for linear layers; nonlinearities, BN, pooling and adds are free;
- ternary convs are counted apart as additions: one add/sub per non-zero weight per output pixel;
- weight bytes: float32 for everything vs. float32 trainable + 2-bit packed ternary weights.

Spatial sizes come from one forward pass on the meta device (no compute, no memory).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from lbdeploy.models.ternary import TernaryConv2d
from lbdeploy.ops.ternary_conv import packed_row_bytes


@dataclass
class LayerStats:
    """Cost of one conv or linear layer."""

    name: str
    kind: str  # "conv", "ternary" or "linear"
    in_channels: int
    out_channels: int
    kernel: tuple
    output_hw: tuple
    trainable_params: int
    fixed_params: int
    nonzeros: int
    flops: int
    additions: int
    bytes_fp32: int
    bytes_packed: int


@dataclass
class Analysis:
    """Totals and per-layer stats of a network."""

    arch: str
    input_size: tuple
    layers: list
    trainable_params: int
    fixed_params: int
    ternary_layers: int
    density: float
    flops: int
    ternary_additions: int
    bytes_fp32: int
    bytes_packed: int

    def to_dict(self, per_layer: bool = True) -> dict:
        """JSON-friendly dict (per-layer rows optional)."""
        data = asdict(self)
        if not per_layer:
            data.pop("layers")
        return data


def _layer_stats(name: str, module: nn.Module, out_shape) -> LayerStats:
    if isinstance(module, nn.Linear):
        params = sum(p.numel() for p in module.parameters() if p.requires_grad)
        return LayerStats(name, "linear", module.in_features, module.out_features, (1, 1), (1, 1), params, 0, 0,
                          2 * module.in_features * module.out_features, 0, 4 * params, 4 * params)
    oh, ow = int(out_shape[-2]), int(out_shape[-1])
    kh, kw = module.kernel_size
    cin_g = module.in_channels // module.groups
    if isinstance(module, TernaryConv2d):
        n = module.weight.numel()
        nonzeros = int((module.weight != 0).sum())
        packed = module.out_channels * packed_row_bytes(cin_g * kh * kw)
        return LayerStats(name, "ternary", module.in_channels, module.out_channels, (kh, kw), (oh, ow), 0, n,
                          nonzeros, 0, nonzeros * oh * ow, 4 * n, packed)
    params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    flops = 2 * oh * ow * cin_g * kh * kw * module.out_channels
    return LayerStats(name, "conv", module.in_channels, module.out_channels, (kh, kw), (oh, ow), params, 0, 0,
                      flops, 0, 4 * params, 4 * params)


def analyze(model: nn.Module, input_size: tuple | None = None) -> Analysis:
    """Analyze `model` (built by build_model) for one input image of `input_size` (H, W).

    Returns:
        Analysis with per-layer rows and totals. BN parameters count as trainable (and fp32 bytes).
    """
    config = getattr(model, "config", {}) or {}
    h, w = input_size or tuple(config.get("input_size", (256, 256)))
    shapes: dict[str, tuple] = {}
    probe = copy.deepcopy(model).to("meta")
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, key=name: shapes.__setitem__(key, tuple(out.shape)))
        for name, m in probe.named_modules()
        if isinstance(m, (nn.Conv2d, TernaryConv2d, nn.Linear))
    ]
    with torch.no_grad():
        probe(torch.empty(1, 3, h, w, device="meta"))
    for hook in hooks:
        hook.remove()
    modules = dict(model.named_modules())
    layers = [_layer_stats(name, modules[name], shape) for name, shape in shapes.items()]
    counted = {id(p) for name in shapes for p in modules[name].parameters()}
    other_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in counted)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fixed = sum(layer.fixed_params for layer in layers)
    nonzeros = sum(layer.nonzeros for layer in layers)
    return Analysis(
        arch=config.get("arch", type(model).__name__),
        input_size=(h, w),
        layers=layers,
        trainable_params=trainable,
        fixed_params=fixed,
        ternary_layers=sum(layer.kind == "ternary" for layer in layers),
        density=round(nonzeros / fixed, 4) if fixed else 0.0,
        flops=sum(layer.flops for layer in layers),
        ternary_additions=sum(layer.additions for layer in layers),
        bytes_fp32=sum(layer.bytes_fp32 for layer in layers) + 4 * other_trainable,
        bytes_packed=sum(layer.bytes_packed for layer in layers) + 4 * other_trainable,
    )


# Totals the paper reports for whole networks (Table 9, CIFAR ResNet-56 with bottleneck blocks).
# Ours differ; docs/models.md explains why.
PAPER_TOTALS = {
    "resnet56": {"source": "Table 9", "trainable_params": 0.48e6, "flops": 0.069e9},
    "resnet-lbb-56": {"source": "Table 9", "trainable_params": 0.19e6, "flops": 0.034e9},
}


def paper_totals(arch: str) -> dict | None:
    """The paper's reported totals for `arch` (trainable_params, flops, source), or None."""
    return PAPER_TOTALS.get(arch)


def block_figures(in_ch: int = 256, mid_ch: int = 128, hw: int = 64, kernel_size: int = 3) -> dict:
    """Paper Eq. 4-9 for one hourglass block: conv weight params (no bias) and FLOPs, dense vs LBB.

    Returns:
        dict with params_dense, params_lbb, flops_dense, flops_lbb, param_ratio, and the
        reductions in percent; computed by analyzing real blocks, not by formula.
    """
    from lbdeploy.models.blocks import PreActBottleneck, block_layers

    results = {}
    for variant in ("dense", "lbb"):
        block = PreActBottleneck(in_ch, in_ch, mid_ch, block_layers(variant, 0.5), kernel_size=kernel_size)
        block.config = {"arch": f"block-{variant}", "input_size": (hw, hw)}
        stats = analyze(_BlockAsImage(block, in_ch), (hw, hw))
        weights = sum(l.trainable_params - (l.out_channels if l.kind == "conv" else 0) for l in stats.layers)
        results[variant] = (weights, stats.flops)
    (pd, fd), (pb, fb) = results["dense"], results["lbb"]
    return {
        "params_dense": pd, "params_lbb": pb, "flops_dense": fd, "flops_lbb": fb,
        "param_ratio": pd / pb, "param_reduction_pct": 100 * (1 - pb / pd),
        "flops_reduction_pct": 100 * (1 - fb / fd),
        "flops_reduction_pct_rounded_gflops": 100 * (1 - round(fb / 1e9, 1) / round(fd / 1e9, 1)),
    }


def cpd_block_figures(channels: int = 32, hw: int = 88) -> dict:
    """Paper §4.4: "the flop of each basic convolution block is 9 times higher than the LBB's".

    Analyzes a real CPD basic convolution block (3x3 conv-BN, `channels` -> `channels`, as in CPD's
    decoders: 32 channels on 88x88 maps for a 352x352 input) and the LBB that CPD-LB puts in its
    place (1x1 c -> c/2, 3x3 ternary, 1x1 c/2 -> c). Real-conv FLOPs are 2HW * 9c^2 vs
    2HW * (c * c/2 + c/2 * c) = 2HW * c^2, so the ratio is exactly 9 (= k^2) for any c and map size.

    Returns:
        dict with flops_basic, flops_lbb, flops_ratio, trainable_basic, trainable_lbb (BN and
        biases included), fixed_lbb (ternary weights) and additions_lbb (ternary adds).
    """
    from lbdeploy.models.cpd import PLAIN, conv_unit

    stats = {}
    for name, block in (("basic", conv_unit(PLAIN, 0.5)(channels, channels)), ("lbb", conv_unit("lbb", 0.5)(channels, channels))):
        block.config = {"arch": f"cpd-block-{name}", "input_size": (hw, hw)}
        stats[name] = analyze(_BlockAsImage(block, channels), (hw, hw))
    basic, lbb = stats["basic"], stats["lbb"]
    return {"flops_basic": basic.flops, "flops_lbb": lbb.flops, "flops_ratio": basic.flops / lbb.flops,
            "trainable_basic": basic.trainable_params, "trainable_lbb": lbb.trainable_params,
            "fixed_lbb": lbb.fixed_params, "additions_lbb": lbb.ternary_additions}


class _BlockAsImage(nn.Module):
    """Feeds a block a tensor of `channels` channels from analyze()'s 3-channel probe."""

    def __init__(self, block: nn.Module, channels: int):
        super().__init__()
        self.block, self.channels = block, channels
        self.config = block.config

    def forward(self, x):
        return self.block(x[:, :1].expand(-1, self.channels, -1, -1))
