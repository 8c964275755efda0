"""Run an exported artifact through the board-side runtime and save its outputs.

Executed inside the emulated ARM lane by `lbdeploy.testing.arm_lane.run_artifact_emulated`, so the
artifact goes through exactly what a board runs: `runtime.artifact.open_artifact` (manifest and
sha256 checks) and `runtime.backends.create_backend` (kernel-library architecture check, custom-op
registration). It needs no torch.

    python -m lbdeploy.testing.artifact_runner ARTIFACT_DIR INPUT.npy OUTPUT.npz [BACKEND]

An LbdeployError is printed as one last stderr line `ErrorClass: message` with exit code 2 (as the
CLI does), so the caller can raise the same error class on its side.
"""

from __future__ import annotations

import sys

import numpy as np

from lbdeploy.errors import LbdeployError

ERROR_EXIT_CODE = 2


def run_artifact(artifact_dir: str, input_npy: str, output_npz: str, backend: str = "auto") -> list[str]:
    """Open and verify the artifact, run its backend on the array in `input_npy`, save all outputs.

    Returns:
        The output names written to `output_npz`.
    Raises:
        LbdeployError: the artifact is refused or its backend cannot run here.
    """
    from runtime.artifact import open_artifact
    from runtime.backends import create_backend

    root, manifest = open_artifact(artifact_dir)
    engine = create_backend(backend, root, manifest)
    outputs = engine.run({manifest["input"]["name"]: np.load(input_npy).astype(np.float32, copy=False)})
    np.savez(output_npz, **outputs)
    return list(outputs)


def main(argv: list[str]) -> int:
    """Entry point; see the module docstring for the arguments."""
    if len(argv) not in (3, 4):
        print("usage: python -m lbdeploy.testing.artifact_runner ARTIFACT_DIR INPUT.npy OUTPUT.npz [BACKEND]",
              file=sys.stderr)
        return ERROR_EXIT_CODE
    try:
        names = run_artifact(*argv)
    except LbdeployError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return ERROR_EXIT_CODE
    print(f"artifact_runner: outputs {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
