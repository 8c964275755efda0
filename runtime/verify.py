"""`lbdeploy verify ARTIFACT`: is this folder what was exported, and does it still compute it here?

No PyTorch is needed. In order:

1. the signature, when a trusted public key is configured (lbdeploy/signing.py);
2. the manifest's schema, every listed file inside the folder and matching its sha256, every
   loadable file listed (`lbdeploy.artifact.open_artifact`);
3. files in the folder that the manifest does not list (reported; they are never loaded);
4. the stored reference (reference/inputs.npz, reference/outputs.npz, written by the exporter's
   parity gate): the artifact's backend runs the input here and every output must lie within its
   stored elementwise tolerance of PyTorch's float64 output.

Library use, e.g. after a command rewrote an artifact: `verify_artifact(path).ok`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lbdeploy.artifact import open_artifact, stray_entries
from lbdeploy.errors import LbdeployError
from lbdeploy.runtime.verified import private_copies


@dataclass(frozen=True)
class Finding:
    """One verified property: `what` was checked, `ok`, and `detail` (what was found)."""

    what: str
    ok: bool
    detail: str

    def line(self) -> str:
        """`ok    what: detail` or `FAIL  what: detail`."""
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.what}: {self.detail}"


@dataclass
class VerifyReport:
    """Every finding of `verify_artifact` on one artifact."""

    root: Path
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every finding passed."""
        return all(finding.ok for finding in self.findings)

    def lines(self) -> list[str]:
        """One line per finding."""
        return [finding.line() for finding in self.findings]


def _load_npz(path: Path) -> dict:
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def _reference(root: Path, manifest: dict, backend: str, threads: int | None) -> Finding:
    """Run the stored reference input on the artifact's backend and compare with the stored outputs."""
    import numpy as np

    from lbdeploy.runtime.backends import create_backend

    section = manifest.get("reference")
    if not section:
        return Finding("reference outputs", True, "none stored (an int8 export, or one made before lbdeploy "
                                                  "stored them): hashes only")
    with private_copies(root, manifest["files"], [section["inputs"], section["outputs"]], "reference file") as copies:
        try:
            inputs, expected = _load_npz(copies[section["inputs"]]), _load_npz(copies[section["outputs"]])
        except (OSError, ValueError) as err:
            return Finding("reference outputs", False, f"unreadable reference file ({err})")
    runner = create_backend(backend, root, manifest, threads=threads)
    outputs = runner.run({runner.input_names[0]: inputs["image"].astype(np.float32)})
    worst, worst_name = 0.0, None
    for name, reference in expected.items():
        if name.endswith(".tolerance"):
            continue
        if name not in outputs or np.shape(outputs[name]) != reference.shape:
            return Finding("reference outputs", False, f"output {name!r} is missing or has another shape")
        ratio = np.nan_to_num(np.abs(outputs[name].astype(np.float64) - reference) / expected[f"{name}.tolerance"],
                              nan=np.inf)
        if ratio.max() >= worst:
            worst, worst_name = float(ratio.max()), name
    detail = f"worst error/tolerance {worst:.2e} ({worst_name}) on {getattr(runner, 'name', backend)}"
    return Finding("reference outputs", worst <= 1.0, detail)


def verify_artifact(artifact_dir, trusted_key=None, backend: str = "auto", threads: int | None = None) -> VerifyReport:
    """Re-check an artifact folder: signature (with a trusted key), hashes, containment, stored reference outputs.

    Args:
        artifact_dir: the artifact folder.
        trusted_key: a PEM public key, or None for $LBDEPLOY_TRUSTED_KEY (none: no signature check).
        backend: the backend that runs the reference ("auto": the artifact's).
        threads: intra-op threads for that run.
    Returns:
        The report (`.ok`, `.lines()`).
    Raises:
        ArtifactError: the folder is refused outright (no manifest, a bad signature, a modified or
            escaping file); nothing of it was loaded then.
    """
    root, manifest = open_artifact(artifact_dir, trusted_key=trusted_key)
    from lbdeploy.signing import trusted_key as configured_key

    key = configured_key(trusted_key)
    report = VerifyReport(root)
    report.findings.append(Finding("signature", True, f"matches {key}" if key else "not checked (no trusted key)"))
    report.findings.append(Finding("files", True, f"{len(manifest['files'])} listed, each inside the folder with "
                                                  "its sha256"))
    strays = stray_entries(root) or []
    report.findings.append(Finding("unlisted entries", True,
                                   "none" if not strays else ", ".join(strays[:5]) + " (never loaded, not checked)"))
    try:
        report.findings.append(_reference(root, manifest, backend, threads))
    except LbdeployError as err:
        report.findings.append(Finding("reference outputs", False, str(err).splitlines()[0]))
    return report
