"""The model registry: preset name -> (builder, default config).

A preset is a few lines of data handed to one builder (no logic in presets):

    @register_model("lbrn-s", builder=build_hourglass, stacks=8, block="lbb")

`build_model(name, **overrides)` merges overrides into the preset's config, builds the network,
draws its ternary weights from `seed` and records the full config on `model.config`, so that
`build_model(config["arch"], **config)` rebuilds the same network (this is how checkpoints load).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lbdeploy.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    """A registered model: its builder and default config."""

    name: str
    builder: Callable
    config: dict
    description: str


_REGISTRY: dict[str, Preset] = {}


def register_model(name: str, builder: Callable, description: str = "", **config) -> None:
    """Register a preset `name` built by `builder(**config)`."""
    if name in _REGISTRY:
        raise ConfigError(f"model {name!r} is registered twice")
    _REGISTRY[name] = Preset(name, builder, dict(config), description)


def list_models() -> list[str]:
    """Names of every registered preset."""
    _load_presets()
    return sorted(_REGISTRY)


def get_preset(name: str) -> Preset:
    """The preset registered as `name`; ConfigError listing the choices otherwise."""
    _load_presets()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_model(name: str, **overrides):
    """Build preset `name` with `overrides` applied to its config.

    Args:
        name: a registered preset (see `list_models()`).
        **overrides: config keys to change (e.g. stacks=2, density=0.1, seed=3); `arch` is ignored.
    Returns:
        The torch.nn.Module, in eval mode, with `model.config` set.
    Raises:
        ConfigError: unknown preset or config key, or an impossible value.
    """
    preset = get_preset(name)
    overrides = {k: v for k, v in overrides.items() if k != "arch"}
    unknown = sorted(set(overrides) - set(preset.config))
    if unknown:
        raise ConfigError(f"{name} has no option(s) {unknown}; options: {sorted(preset.config)}")
    config = {**preset.config, **overrides}
    model = preset.builder(**config)
    model.config = {"arch": name, **config}
    return model.eval()


def _load_presets() -> None:
    # Importing the model modules runs their register_model calls.
    from lbdeploy.models import cpd, hourglass, resnet  # noqa: F401
