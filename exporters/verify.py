"""`lbdeploy verify ARTIFACT`: is this folder what was exported, and does it still compute it here?

No PyTorch is needed. In order:

1. the signature, when a trusted public key is configured (lbdeploy/signing.py);
2. the manifest's schema, every listed file inside the folder and matching its sha256, every
   loadable file listed (`lbdeploy.artifact.open_artifact`);
3. files in the folder that the manifest does not list (reported; they are never loaded);
4. the stored reference (`reference/`, written by the export's gate, exporters/reference.py): the
   artifact's backend runs the stored inputs here and the final output must pass the export's gate
   rule (parity for fp32, accuracy for int8) against PyTorch's stored output.

Library use, e.g. after a command rewrote an artifact: `verify_artifact(path).ok`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lbdeploy.artifact import open_artifact, stray_entries
from lbdeploy.errors import LbdeployError


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


def _reference(root: Path, manifest: dict, backend: str, threads: int | None) -> Finding:
    """Run the stored reference inputs on the artifact's backend and apply the export's gate rule."""
    from lbdeploy.exporters.reference import check_reference
    from lbdeploy.runtime.backends import create_backend

    if not manifest.get("reference"):
        return Finding("reference outputs", True, "none stored (an artifact made before lbdeploy stored them): "
                                                  "hashes only")
    runner = create_backend(backend, root, manifest, threads=threads)
    name = getattr(runner, "name", backend)
    report = check_reference(root, manifest, lambda images: runner.run({runner.input_names[0]: images}), name)
    return Finding("reference outputs", report.passed, f"{manifest['reference']['gate']} rule on {name}: "
                                                       + report.summary().splitlines()[0])


def verify_artifact(artifact_dir, trusted_key=None, backend: str = "auto", threads: int | None = None,
                    run_reference: bool = True) -> VerifyReport:
    """Re-check an artifact folder: signature (with a trusted key), hashes, containment, stored reference outputs.

    Args:
        artifact_dir: the artifact folder.
        trusted_key: a PEM public key, or None for $LBDEPLOY_TRUSTED_KEY (none: no signature check).
        backend: the backend that runs the reference ("auto": the artifact's).
        threads: intra-op threads for that run.
        run_reference: False leaves out the reference run (build-engine: its own precision gate has
            judged the engine's outputs, at fp16 where the stored float32 rule does not apply).
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
    if not run_reference:
        return report
    try:
        report.findings.append(_reference(root, manifest, backend, threads))
    except LbdeployError as err:
        report.findings.append(Finding("reference outputs", False, str(err).splitlines()[0]))
    return report
