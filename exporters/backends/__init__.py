"""Export steps, one module per backend, each beside its backend's record (`BACKEND`, a
lbdeploy.backends.BackendSpec registered through the `lbdeploy.backends` entry points).

An export step is a class built from the target record, the backend's settings on it and whether
the model uses our custom ops, with three methods the exporter calls in order:

    step = OrtExport(target, settings, custom_ops=True)
    step.check()                                  # before any work: can this target be served?
    fragment = step.add_files(work, progress)     # write the backend's files; manifest fragment
    runner = step.parity_runner(work, manifest)   # (run(images) -> outputs, label) or None
    text = step.next_steps(manifest)              # what to do on the device, printed after the gate

`ExportStep` holds the defaults; a backend overrides what it needs.
"""

from lbdeploy.exporters.backends.base import ExportStep

__all__ = ["ExportStep"]
