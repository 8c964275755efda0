"""Inference backends behind one small interface (`base.Backend`) and one factory (`create_backend`).

Each backend lives in its own module and is imported only when asked for, so `import runtime`
stays light (no torch, TVM or TensorRT). To add a backend, write a class with the
`Backend` protocol and the constructor `(artifact_dir, manifest, **opts)` and add its name to
`base.BACKENDS`.
"""

from runtime.backends.base import BACKENDS, Backend, create_backend

__all__ = ["BACKENDS", "Backend", "create_backend"]
