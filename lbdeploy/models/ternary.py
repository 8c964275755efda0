"""Fixed ternary convolutions: the local-binarized k x k filters of LBRN.

How the weights are drawn (identical on every machine, numpy/torch version independent):

1. Each layer gets its own 64-bit seed, `derive_seed(model_seed, qualified_layer_name)` =
   the first 8 bytes (little endian) of sha256("<model_seed>:<layer_name>").
2. Every weight index i in 0..n-1 (row-major over [Cout, Cin/groups, kH, kW]) gets a rank key
   `splitmix64(seed ^ splitmix64(2*i))` and a sign bit, the top bit of `splitmix64(seed ^ splitmix64(2*i+1))`.
3. The `round(density * n)` indices with the smallest keys (ties broken by index) are non-zero;
   a non-zero weight is -1 when its sign bit is set and +1 otherwise (signs are Bernoulli(1/2)).

So exactly `round(density * n)` weights are non-zero (the paper's "sparsity level" is this density:
the fraction of non-zeros) and their positions are uniform over the tensor.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lbdeploy.errors import TernaryWeightError
from lbdeploy.ops.ternary_conv import check_ternary

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The SplitMix64 finalizer on a uint64 array (wrapping arithmetic)."""
    z = np.asarray(values, dtype=np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def derive_seed(model_seed: int, layer_name: str) -> int:
    """A layer's 64-bit seed from the model seed and the layer's qualified name."""
    digest = hashlib.sha256(f"{int(model_seed)}:{layer_name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def draw_ternary(shape: tuple[int, ...], density: float, seed: int) -> np.ndarray:
    """Draw int8 ternary weights of `shape` with exactly round(density * n) non-zeros.

    Args:
        shape: weight shape, e.g. (Cout, Cin/groups, kH, kW).
        density: fraction of non-zero weights, in [0, 1].
        seed: 64-bit layer seed (see `derive_seed`).
    Returns:
        int8 array of -1/0/+1.
    """
    if not 0.0 <= density <= 1.0:
        raise TernaryWeightError(f"density must be within [0, 1], got {density}")
    n = int(np.prod(shape))
    index = np.arange(n, dtype=np.uint64)
    seed64 = np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
    keys = splitmix64(seed64 ^ splitmix64(index * np.uint64(2)))
    negative = (splitmix64(seed64 ^ splitmix64(index * np.uint64(2) + np.uint64(1))) >> np.uint64(63)).astype(bool)
    nonzero = int(np.floor(density * n + 0.5))
    chosen = np.argsort(keys, kind="stable")[:nonzero]
    weights = np.zeros(n, dtype=np.int8)
    weights[chosen] = np.where(negative[chosen], -1, 1)
    return weights.reshape(shape)


class TernaryConv2d(nn.Module):
    """A k x k convolution with fixed ternary weights (an int8 buffer, never trained).

    Geometry arguments follow `nn.Conv2d`. The weights are a buffer named `weight` (so they are
    saved in the state_dict, excluded from `parameters()` and untouched by any optimizer).
    Loading a state_dict whose `weight` is not ternary raises `TernaryWeightError`.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, dilation=1,
                 groups=1, density=0.5, seed=0, bias=False):
        super().__init__()
        if bias:
            raise TernaryWeightError("TernaryConv2d has no bias: fold it into the following BatchNorm")
        if in_channels % groups or out_channels % groups:
            raise TernaryWeightError(f"channels {in_channels}->{out_channels} are not divisible by groups={groups}")
        k = _pair(kernel_size)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
        self.stride, self.dilation, self.groups = _pair(stride), _pair(dilation), groups
        self.padding = _pair(padding) if padding is not None else (dilation * (k[0] - 1) // 2, dilation * (k[1] - 1) // 2)
        self.density = float(density)
        shape = (out_channels, in_channels // groups, *k)
        self.register_buffer("weight", torch.from_numpy(draw_ternary(shape, self.density, seed)))

    def reset_ternary(self, seed: int) -> None:
        """Redraw the weights from `seed` at this layer's density."""
        self.weight.copy_(torch.from_numpy(draw_ternary(tuple(self.weight.shape), self.density, seed)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), None, self.stride, self.padding, self.dilation, self.groups)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        key = prefix + "weight"
        if key in state_dict:
            checked = check_ternary(state_dict[key].detach().cpu().numpy(), what=f"'{key}'")
            state_dict[key] = torch.from_numpy(checked)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, density={self.density}")


class HalfTernaryConv2d(nn.Module):
    """LBRN-3: half of the output filters ternary and fixed, the other half real and trainable."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, density=0.5, seed=0,
                 dilation=1):
        super().__init__()
        k = _pair(kernel_size)
        padding = padding if padding is not None else (dilation * (k[0] // 2), dilation * (k[1] // 2))
        fixed = out_channels // 2
        self.ternary = TernaryConv2d(in_channels, fixed, k, stride, padding, dilation, density=density, seed=seed)
        self.real = nn.Conv2d(in_channels, out_channels - fixed, k, stride, padding, dilation, bias=True)

    def forward(self, x):
        return torch.cat([self.ternary(x), self.real(x)], dim=1)


def init_ternary(model: nn.Module, seed: int) -> None:
    """Draw every TernaryConv2d of `model` from the model seed and the layer's name."""
    for name, module in model.named_modules():
        if isinstance(module, TernaryConv2d):
            module.reset_ternary(derive_seed(seed, name))


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value), int(value))
