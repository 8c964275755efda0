"""Optimizer and learning-rate schedule of the paper: RMSprop at 2.5e-4, divided by 10 at each drop.

Only trainable parameters are optimized: the fixed ternary weights are buffers, so no optimizer
sees them. To try another schedule, return another torch scheduler from `make_scheduler`.
"""

from __future__ import annotations

import torch

from lbdeploy.errors import ConfigError

LR_DROP_FACTOR = 0.1


def parse_drops(text: str | None) -> tuple[int, ...]:
    """'150,170,200' -> (150, 170, 200); '' or None -> ().

    Raises:
        ConfigError: a value that is not a positive integer, or drops out of order.
    """
    if not text:
        return ()
    try:
        drops = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--lr-drops must be comma-separated epochs like 150,170,200, got {text!r}") from None
    if any(d <= 0 for d in drops) or list(drops) != sorted(set(drops)):
        raise ConfigError(f"--lr-drops must be increasing positive epochs, got {text!r}")
    return drops


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """RMSprop over the model's trainable parameters (torch defaults otherwise, as in pytorch-pose)."""
    if not lr > 0:
        raise ConfigError(f"learning rate must be > 0, got {lr}")
    return torch.optim.RMSprop([p for p in model.parameters() if p.requires_grad], lr=lr)


def make_scheduler(optimizer: torch.optim.Optimizer, drops: tuple[int, ...]):
    """Per-epoch schedule: the learning rate is multiplied by 0.1 at each epoch in `drops`."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(drops), gamma=LR_DROP_FACTOR)
