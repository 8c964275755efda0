"""Run an exported artifact through the board-side runtime and save what it returns.

Executed inside the emulated ARM lane by `lbdeploy.runtime.testing.arm_lane` (`run_artifact_emulated`,
`predict_emulated`), so the artifact goes through exactly what a board runs:
`lbdeploy.artifact.open_artifact` (manifest and sha256 checks), `lbdeploy.runtime.backends.create_backend`
(kernel-library architecture check, custom-op registration) and, for `predict`, the whole
`lbdeploy.runtime.predictor.Predictor` (image decoding, affine crop, decoding of keypoints). No torch.

    python -m lbdeploy.runtime.testing.artifact_runner run ARTIFACT_DIR INPUT.npy OUTPUT.npz [BACKEND]
    python -m lbdeploy.runtime.testing.artifact_runner predict ARTIFACT_DIR IMAGE OUTPUT.npz [BACKEND]

`run` saves every model output; `predict` saves `keypoints`, `scores`, `centers` and `scales`.
An LbdeployError is printed as one last stderr line `ErrorClass: message` with exit code 2 (as the
CLI does), so the caller can raise the same error class on its side.
"""

from __future__ import annotations

import sys

import numpy as np

from lbdeploy.errors import LbdeployError

ERROR_EXIT_CODE = 2
USAGE = ("usage: python -m lbdeploy.runtime.testing.artifact_runner run|predict ARTIFACT_DIR INPUT.npy|IMAGE "
         "OUTPUT.npz [BACKEND]")


def run_artifact(artifact_dir: str, input_npy: str, output_npz: str, backend: str = "auto") -> list[str]:
    """Open and verify the artifact, run its backend on the array in `input_npy`, save all outputs.

    Returns:
        The output names written to `output_npz`.
    Raises:
        LbdeployError: the artifact is refused or its backend cannot run here.
    """
    from lbdeploy.artifact import open_artifact
    from lbdeploy.runtime.backends import create_backend

    root, manifest = open_artifact(artifact_dir)
    engine = create_backend(backend, root, manifest)
    outputs = engine.run({manifest["input"]["name"]: np.load(input_npy).astype(np.float32, copy=False)})
    np.savez(output_npz, **outputs)
    return list(outputs)


def predict_image(artifact_dir: str, image: str, output_npz: str, backend: str = "auto") -> list[str]:
    """Estimate the pose in `image` with a Predictor on the artifact; save its arrays.

    Returns:
        The array names written to `output_npz` (keypoints, scores, centers, scales).
    Raises:
        LbdeployError: the artifact or the image is refused, or the backend cannot run here.
    """
    from lbdeploy.runtime.predictor import Predictor

    result = Predictor(artifact_dir, backend=backend).predict(image)
    arrays = {"keypoints": result.keypoints, "scores": result.scores, "centers": result.centers,
              "scales": result.scales}
    np.savez(output_npz, **arrays)
    return list(arrays)


MODES = {"run": run_artifact, "predict": predict_image}


def main(argv: list[str]) -> int:
    """Entry point; see the module docstring for the arguments."""
    if len(argv) not in (4, 5) or argv[0] not in MODES:
        print(USAGE, file=sys.stderr)
        return ERROR_EXIT_CODE
    try:
        names = MODES[argv[0]](*argv[1:])
    except LbdeployError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return ERROR_EXIT_CODE
    print(f"artifact_runner: saved {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
