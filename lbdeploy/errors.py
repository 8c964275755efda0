"""One error hierarchy for lbdeploy.

Every error a user can cause (a bad file, a wrong option, a missing library) is an
`LbdeployError`. The CLI prints its message on one line and exits with code 2; library callers
catch `LbdeployError`. Messages say what went wrong and what to do about it.
"""


class LbdeployError(Exception):
    """Base class of every user-facing lbdeploy error."""


class CheckpointError(LbdeployError):
    """A model.pt that cannot be read safely or does not describe a known network."""


class TernaryWeightError(LbdeployError):
    """Weights that should be ternary ({-1, 0, +1}) are not, or have the wrong shape."""


class ConfigError(LbdeployError):
    """An unknown preset, an impossible option or an inconsistent configuration."""


class ExportError(LbdeployError):
    """An export could not be completed; the output folder was not written."""


class ParityError(ExportError):
    """The exported model differs from PyTorch beyond the documented tolerances."""


class KernelLibraryError(LbdeployError):
    """Our custom-op kernel library is missing, cannot be built, or targets another machine."""


class ArtifactError(LbdeployError):
    """An exported artifact folder is incomplete, modified or of an unknown format."""


class InputError(LbdeployError):
    """An input image, box or tensor that cannot be used (bad bytes, wrong shape, too large)."""


class BackendUnavailable(LbdeployError):
    """The requested backend's package or device is not present on this machine."""


class CalibrationError(ExportError):
    """The int8 calibration images are missing, unreadable or too few, or the calibrated ranges overflow."""


class AccuracyError(ExportError):
    """The int8 model's keypoints disagree with PyTorch fp32 beyond the accuracy gate (docs/export.md)."""


class QuantizationError(LbdeployError):
    """Quantization parameters no backend runs: a scale that is not finite and positive, a NaN bias."""
