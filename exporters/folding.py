"""Export-time rewriting of a trained network: BatchNorm folding and TernaryConv lowering.

Everything patched only for export lives here; the models stay plain nn.Modules.
`prepare_for_export(model, ops)` returns a rewritten deep copy in which

- every BN that directly follows a conv is folded into it (stem conv + bn1, the hourglass heads,
  CPD's conv-BN units, and inside a pre-activation block each stage's BN into the previous stage's conv);
- a ternary conv followed by BN + activation becomes one `TernaryConvOp` with scale = the BN's
  gamma/sqrt(var+eps), bias = its shift and the activation fused; other ternary convs get
  scale 1, bias 0;
- BNs that cannot be folded (on the residual stream, before the first conv of a block; in the
  pyramid branch) are kept as ONNX BatchNormalization.

With ops="custom" a `TernaryConvOp` exports as one `ai.lbdeploy::TernaryConv` node with 2-bit
packed weights; with ops="standard" it exports as a plain `Conv` with float weights (scale folded
in) followed by the activation, for runtimes without our op. Outside an export both compute the
same thing in eager PyTorch, so the folded model can be checked against the original.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lbdeploy.errors import ExportError
from lbdeploy.models.blocks import PreActBottleneck, PyramidBottleneck
from lbdeploy.models.cpd import ConvBN
from lbdeploy.models.hourglass import HourglassNet
from lbdeploy.models.ternary import HalfTernaryConv2d, TernaryConv2d
from lbdeploy.ops.ternary_conv import DOMAIN, OP_TYPE, OP_VERSION, TernaryConvAttrs, pack_ternary

OPS_MODES = ("custom", "standard")


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with bn(x) == x * scale + shift in eval mode."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias.detach() - bn.running_mean * scale


def fold_affine(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> nn.Conv2d:
    """A copy of `conv` computing conv(x) * scale + shift per output channel."""
    folded = copy.deepcopy(conv)
    with torch.no_grad():
        folded.weight.mul_(scale.view(-1, 1, 1, 1))
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
        folded.bias = nn.Parameter(bias * scale + shift)
    return folded


def activation_name(act: nn.Module | None) -> str:
    """The TernaryConv activation attribute for an activation module."""
    if act is None or isinstance(act, nn.Identity):
        return "none"
    if isinstance(act, nn.ReLU):
        return "relu"
    if isinstance(act, nn.Sigmoid):
        return "sigmoid"
    raise ExportError(f"activation {type(act).__name__} cannot be fused into TernaryConv (relu or sigmoid only)")


class TernaryConvOp(nn.Module):
    """A TernaryConv2d with its following affine and activation, as exported.

    Holds the 2-bit packed weights for the ONNX node and float weights for eager execution / plain Conv.
    """

    def __init__(self, conv: TernaryConv2d, scale: torch.Tensor, shift: torch.Tensor, activation: str, ops: str):
        super().__init__()
        self.ops = ops
        self.attrs = TernaryConvAttrs(
            kernel_shape=tuple(conv.kernel_size),
            strides=tuple(conv.stride),
            pads=(conv.padding[0], conv.padding[1], conv.padding[0], conv.padding[1]),
            dilations=tuple(conv.dilation),
            group=conv.groups,
            activation=activation,
        )
        self.out_channels = conv.out_channels
        self.register_buffer("packed", torch.from_numpy(pack_ternary(conv.weight.cpu().numpy())))
        self.register_buffer("scale", scale.detach().float().clone())
        self.register_buffer("bias", shift.detach().float().clone())
        # Eager path and ops="standard": float weights with the scale folded in (a constant).
        self.register_buffer("dense_weight", conv.weight.detach().float() * self.scale.view(-1, 1, 1, 1))
        self.conv_args = (tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.groups)

    def _activate(self, y):
        if self.attrs.activation == "relu":
            return torch.relu(y)
        if self.attrs.activation == "sigmoid":
            return torch.sigmoid(y)
        return y

    def forward(self, x):
        if self.ops == "custom" and torch.compiler.is_exporting():
            oh, ow = self.attrs.output_hw(x.shape[2], x.shape[3])
            return torch.onnx.ops.symbolic(
                f"{DOMAIN}::{OP_TYPE}",
                (x, self.packed, self.scale.to(x.dtype), self.bias.to(x.dtype)),
                attrs=self.attrs.onnx_attributes(),
                dtype=x.dtype,
                shape=(x.shape[0], self.out_channels, oh, ow),
                version=OP_VERSION,
            )
        stride, padding, dilation, groups = self.conv_args
        return self._activate(F.conv2d(x, self.dense_weight, self.bias, stride, padding, dilation, groups))


class HalfFused(nn.Module):
    """LBRN-3's half-ternary conv with the following BN + activation folded into both halves."""

    def __init__(self, ternary: nn.Module, real: nn.Module):
        super().__init__()
        self.ternary, self.real = ternary, real

    def forward(self, x):
        return torch.cat([self.ternary(x), self.real(x)], dim=1)


def fuse_conv(conv: nn.Module, bn: nn.BatchNorm2d | None, act: nn.Module | None, ops: str) -> nn.Module:
    """`act(bn(conv(x)))` as one export-friendly module (bn/act None: absent)."""
    if bn is not None:
        scale, shift = bn_affine(bn)
    else:
        channels = conv.out_channels
        scale, shift = torch.ones(channels), torch.zeros(channels)
    if isinstance(conv, TernaryConv2d):
        return TernaryConvOp(conv, scale, shift, activation_name(act), ops)
    if isinstance(conv, HalfTernaryConv2d):
        half = conv.ternary.out_channels
        ternary = TernaryConvOp(conv.ternary, scale[:half], shift[:half], activation_name(act), ops)
        real = fuse_conv(conv.real, None, None, ops)
        real = fold_affine(real, scale[half:], shift[half:]) if bn is not None else real
        return HalfFused(ternary, real if act is None else nn.Sequential(real, act))
    if isinstance(conv, nn.Conv2d):
        folded = fold_affine(conv, scale, shift) if bn is not None else conv
        return folded if act is None else nn.Sequential(folded, act)
    raise ExportError(f"cannot export layer {type(conv).__name__}")


class FoldedBottleneck(nn.Module):
    """A PreActBottleneck with each inner BN folded into the conv before it."""

    def __init__(self, block: PreActBottleneck, ops: str):
        super().__init__()
        stages = [i for i in (1, 2, 3) if getattr(block, f"bn{i}", None) is not None]
        layers = [getattr(block, f"bn{stages[0]}"), block.act]
        for position, stage in enumerate(stages):
            conv = getattr(block, f"conv{stage}")
            if position + 1 < len(stages):
                layers.append(fuse_conv(conv, getattr(block, f"bn{stages[position + 1]}"), block.act, ops))
            else:
                layers.append(fuse_conv(conv, None, None, ops))
        self.path = nn.Sequential(*layers)
        self.downsample = block.downsample

    def forward(self, x):
        return self.path(x) + (x if self.downsample is None else self.downsample(x))


def _fold_pyramid(block: PyramidBottleneck, ops: str) -> PyramidBottleneck:
    # Only conv1 -> bn2 is a plain conv -> BN chain; the rest sum branches before their BN.
    block.conv1 = fuse_conv(block.conv1, block.bn2, None, ops)
    block.bn2 = nn.Identity()
    return block


def _rewrite(module: nn.Module, ops: str) -> nn.Module:
    if isinstance(module, PyramidBottleneck):
        module = _fold_pyramid(module, ops)
    elif isinstance(module, PreActBottleneck):
        return FoldedBottleneck(module, ops)
    elif isinstance(module, HourglassNet):
        module.conv1 = fold_affine(module.conv1, *bn_affine(module.bn1))
        module.bn1 = nn.Identity()
        for i, head in enumerate(module.fc):
            conv, bn, act = head
            module.fc[i] = nn.Sequential(fold_affine(conv, *bn_affine(bn)), act)
    elif isinstance(module, ConvBN):
        return fuse_conv(module.conv, module.bn, module.act, ops)
    elif isinstance(module, (TernaryConv2d, HalfTernaryConv2d)):
        return fuse_conv(module, None, None, ops)
    for name, child in list(module.named_children()):
        setattr(module, name, _rewrite(child, ops))
    return module


class ExportWrapper(nn.Module):
    """Returns a tuple of outputs (every stack's heatmaps, or the logits) for torch.onnx.export."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image):
        out = self.model(image)
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)


def prepare_for_export(model: nn.Module, ops: str = "custom") -> nn.Module:
    """A folded, export-ready deep copy of `model` (eval mode), wrapped to return a tuple.

    Raises:
        ExportError: unknown ops mode or a layer that cannot be exported.
    """
    if ops not in OPS_MODES:
        raise ExportError(f"--ops must be one of {OPS_MODES}, got {ops!r}")
    clone = copy.deepcopy(model).eval()
    return ExportWrapper(_rewrite(clone, ops)).eval()
