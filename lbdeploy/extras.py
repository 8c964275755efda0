"""Which pip extra of lbdeploy provides which optional import, for one-line "install X" errors.

A board installs `lbdeploy[runtime]` without torch; a command that needs torch (create, inspect,
export, models, train, import) then meets a ModuleNotFoundError deep inside the library. The CLI
turns it into `Error: ... pip install 'lbdeploy[torch]'` with exit code 2 through
`missing_extra_error`. A backend's engine modules come from its record (`BackendSpec.imports`
and `.extra`, lbdeploy/backends.py); to cover another optional dependency, add its top-level
module and extra to EXTRA_OF_MODULE (the extras are defined in pyproject.toml).
"""

from __future__ import annotations

from lbdeploy.backends import backends
from lbdeploy.errors import LbdeployError

EXTRA_OF_MODULE = {
    "torch": "torch", "torchvision": "torch", "onnx": "torch", "onnxscript": "torch", "scipy": "torch",
    "fastapi": "serve", "uvicorn": "serve", "multipart": "serve", "ray": "ray", "model_signing": "signing",
}


def extra_of(module: str) -> str | None:
    """The pip extra that installs top-level `module`: EXTRA_OF_MODULE, else the backend record whose
    engine needs it; None when no extra does."""
    if module in EXTRA_OF_MODULE:
        return EXTRA_OF_MODULE[module]
    return next((spec.extra for spec in backends().values() if module in spec.imports), None)


class MissingExtraError(LbdeployError):
    """An optional dependency that the command needs is not installed."""


def missing_extra_error(err: ModuleNotFoundError) -> MissingExtraError | None:
    """The one-line error for a missing optional module, or None when `err` is not about one.

    Args:
        err: the ModuleNotFoundError raised by an import.
    Returns:
        A MissingExtraError naming the module and the extra to install, or None (an unexpected
        missing module is a bug and keeps its traceback).
    """
    top = (err.name or "").split(".")[0]
    extra = extra_of(top)
    if extra is None:
        return None
    return MissingExtraError(f"this command needs {top}, which is not installed here; "
                             f"pip install 'lbdeploy[{extra}]'")
