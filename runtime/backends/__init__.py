"""Inference backends behind one small interface (`base.Backend`) and one factory (`create_backend`).

Each backend lives in its own module and is imported only when asked for, so `import runtime`
stays light (no torch, TVM or TensorRT). To add a backend, write a class with the `Backend`
protocol and the constructor `(artifact_dir, manifest, **opts)`, and register it in
lbdeploy/backends.py (docs/architecture.md).
"""

from lbdeploy.runtime.backends.base import Backend, create_backend

__all__ = ["Backend", "create_backend"]
