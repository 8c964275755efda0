"""LBRN model zoo: fixed ternary convs, pre-activation blocks, hourglass and CIFAR ResNet presets.

    from lbdeploy.models import build_model, list_models
    model = build_model("lbrn-s", stacks=2, density=0.1, seed=3)
    fresh = create_model("lbrn-s", stacks=2)   # BatchNorm statistics calibrated: runs sanely untrained
"""

from lbdeploy.models.calibration import calibrate_batchnorm, create_model
from lbdeploy.models.registry import build_model, get_preset, list_models
from lbdeploy.models.ternary import TernaryConv2d, derive_seed, draw_ternary

__all__ = ["build_model", "calibrate_batchnorm", "create_model", "get_preset", "list_models", "TernaryConv2d", "derive_seed", "draw_ternary"]
