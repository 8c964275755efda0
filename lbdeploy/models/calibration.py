"""BatchNorm statistics of a fresh model, so that it runs sanely before any training.

A freshly built network has BatchNorm running statistics at their defaults (mean 0, variance 1).
In eval mode those leave every layer's scale as it is, and a fixed ternary conv multiplies the
scale of its input by about sqrt(non-zeros per filter) (weights are +-1, not ~1/sqrt(fan-in)):
an 8-stack LBRN-S then gives heatmaps around 1e29. Training never sees this, since BatchNorm
normalizes with batch statistics in training mode.

`calibrate_batchnorm` sets the running statistics from a few batches of synthetic images: the
network runs in training mode under `no_grad`, each BatchNorm averages the batch statistics it
sees (cumulative average, `momentum=None`), then the momentum is restored. Only the running
statistics and `num_batches_tracked` buffers change: no trainable parameter, no ternary weight
and not torch's global random state, so the paper's training recipe is untouched (training
replaces the statistics within its first hundred steps anyway). docs/models.md says why this was
chosen over zero-initialised residual branches.

`create_model` is `build_model` followed by this calibration: what `lbdeploy create` saves.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lbdeploy.errors import ConfigError
from lbdeploy.models.registry import build_model

# How many synthetic images: at least MIN_IMAGES, and enough to cover MIN_PIXELS input pixels. At
# 64x64 the innermost hourglass level is 1x1, so each image gives one sample per channel there;
# with fewer than ~16 samples the variances are noisy and the errors compound over the stacks.
MIN_IMAGES = 4
MIN_PIXELS = 16 * 64 * 64
BATCH_SIZE = 4
# Synthetic images are smooth noise: a coarse grid of this many pixels per cell, upsampled
# bilinearly, plus a little fine noise, standardized per channel (what a normalized photo looks
# like to the first layers: spatially correlated, zero mean, unit variance).
NOISE_CELL = 8
FINE_NOISE = 0.1


def synthetic_images(count: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """`count` normalized synthetic RGB images [count, 3, height, width] (smooth noise, unit variance)."""
    coarse = torch.randn(count, 3, max(height // NOISE_CELL, 2), max(width // NOISE_CELL, 2), generator=generator)
    images = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    images = images + FINE_NOISE * torch.randn(count, 3, height, width, generator=generator)
    return (images - images.mean(dim=(2, 3), keepdim=True)) / images.std(dim=(2, 3), keepdim=True)


def calibration_images(height: int, width: int) -> int:
    """How many synthetic images calibrate a model of this input size (MIN_IMAGES, MIN_PIXELS)."""
    return max(MIN_IMAGES, math.ceil(MIN_PIXELS / (height * width)))


def calibrate_batchnorm(model: nn.Module, input_size=None, images: int | None = None, seed: int = 0) -> nn.Module:
    """Set the running statistics of every BatchNorm of `model` from synthetic images.

    Args:
        model: a network built by `build_model` (its `config["input_size"]` is the default size).
        input_size: (height, width) of the synthetic images (default: the model's input size; the
            statistics hold for that size only, so calibrate at the size the model will run at).
        images: how many synthetic images are averaged over (default: `calibration_images`).
        seed: seed of the synthetic images (a private generator; torch's global RNG is untouched).
    Returns:
        `model`, in eval mode, its BatchNorm statistics calibrated.
    Raises:
        ConfigError: no input size to calibrate at.
    """
    size = input_size or (getattr(model, "config", None) or {}).get("input_size")
    if size is None:
        raise ConfigError("calibrate_batchnorm needs an input_size (the model has no config)")
    height, width = (int(v) for v in size)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    generator = torch.Generator().manual_seed(int(seed))
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    model.train()
    try:
        with torch.no_grad():
            remaining = images or calibration_images(height, width)
            while remaining > 0:
                model(synthetic_images(min(BATCH_SIZE, remaining), height, width, generator))
                remaining -= BATCH_SIZE
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.eval()
    return model


def create_model(name: str, progress=None, **overrides) -> nn.Module:
    """A fresh, untrained network that runs sanely: `build_model(name, **overrides)` with its
    BatchNorm statistics calibrated on synthetic images (seeded by the model's `seed`).

    Args:
        progress: called with a message once the network is built, before the calibration.
    Returns:
        The module in eval mode with `model.config` set (see `build_model`).
    Raises:
        ConfigError: unknown preset or option, or an impossible value.
    """
    model = build_model(name, **overrides)
    if progress:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        progress(f"Built {name} ({trainable:,} trainable parameters); calibrating its BatchNorm statistics on "
                 f"{calibration_images(*model.config['input_size'])} synthetic images...")
    return calibrate_batchnorm(model, seed=int(model.config.get("seed", 0)))
