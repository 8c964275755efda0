"""Reference inputs and outputs kept in an artifact, so a rewritten artifact can be checked again.

`export` stores the images its gate used (or a few of them) and PyTorch's final output on them in
`reference/` (listed in the manifest's `files`, so hash-checked like every file), and the
manifest's `reference` section names them with the gate's rule. `lbdeploy tune` rewrites
model.onnx and then runs `check_reference`: the new model must pass the same gate (parity for fp32,
accuracy for int8) against those outputs, with no torch on the board.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lbdeploy.errors import ArtifactError

FOLDER = "reference"
INPUTS_FILE = f"{FOLDER}/inputs.npy"


def write_reference(work: Path, gate: str, images: np.ndarray, arrays: dict, output: str) -> dict:
    """Save `images` and the expected `arrays` (name -> final output) under work/reference/.

    Args:
        gate: "parity" or "accuracy", the rule that `check_reference` applies.
        output: the model output the arrays hold (the final one).
    Returns:
        The manifest's `reference` section.
    """
    folder = Path(work) / FOLDER
    folder.mkdir(exist_ok=True)
    np.save(folder / "inputs.npy", np.ascontiguousarray(images, dtype=np.float32), allow_pickle=False)
    files = {}
    for name, array in arrays.items():
        files[name] = f"{FOLDER}/{name}.npy"
        np.save(Path(work) / files[name], np.ascontiguousarray(array), allow_pickle=False)
    return {"gate": gate, "inputs": INPUTS_FILE, "output": output, "arrays": files}


def _load(path: Path, relative: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ArtifactError(f"cannot read the reference file {relative!r} ({err}); re-export the model") from None


def load_reference(root: Path, manifest: dict) -> tuple[np.ndarray, dict]:
    """The stored inputs and expected arrays, read from private copies of their verified bytes.

    Raises:
        ArtifactError: no reference is kept (exported before `reference` existed), or a file is
            unlisted, modified or unreadable.
    """
    from lbdeploy.runtime.verified import private_copies

    section = manifest.get("reference")
    if not isinstance(section, dict):
        raise ArtifactError("this artifact keeps no reference inputs and outputs to re-check against; "
                            "re-export it with this lbdeploy")
    relatives = [section["inputs"], *section["arrays"].values()]
    with private_copies(Path(root), manifest["files"], relatives, "reference file") as copies:
        images = _load(copies[section["inputs"]], section["inputs"])
        arrays = {key: _load(copies[path], path) for key, path in section["arrays"].items()}
    return images, arrays


def check_reference(root: Path, manifest: dict, run, backend: str):
    """Run `run` (images -> {output name: array}) on the stored inputs and apply the gate's rule.

    Returns:
        The report (parity or accuracy), with `passed` and `summary()`.
    Raises:
        ArtifactError: the artifact keeps no reference (exported before `reference` existed).
    """
    images, arrays = load_reference(root, manifest)
    section = manifest["reference"]
    output = section["output"]
    outputs = run(images)
    if section["gate"] == "parity":
        from lbdeploy.exporters.parity import compare

        return compare({output: arrays["reference"]}, {output: arrays["float32_reference"]},
                       {output: outputs[output]}, manifest["task"], backend, {"images": "reference/inputs.npy"})
    from lbdeploy.exporters.accuracy import compare_outputs

    return compare_outputs({output: arrays["reference"].astype(np.float64)}, {output: outputs[output]},
                           manifest["task"], backend)
