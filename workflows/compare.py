"""Comparing backends on one model: which (source, backend) pairs to run, exporting on the fly.

Shared by `lbdeploy profile --compare` and `lbdeploy eval --compare`: a model.pt runs the
reference backend itself and is exported for this machine (parity gate included) for every
backend whose record says it exports here (lbdeploy/backends.py), so `--compare torch,ort m.pt`
needs no prior export; an artifact folder runs only its own backend.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Callable

from lbdeploy.exporters.export import export_for_this_machine
from lbdeploy.artifact import open_artifact
from lbdeploy.backends import backend_names, get_backend
from lbdeploy.errors import ArtifactError, ConfigError
from lbdeploy.runtime.backends.base import resolve_backend_name
from lbdeploy.runtime.profiling.report import ProfiledModel

Progress = Callable[[str], None]


def parse_backends(text: str | None) -> list[str] | None:
    """A comma-separated backend list (`--compare torch,ort`) as names; None when empty.

    Raises:
        ConfigError: an unknown backend name.
    """
    if not text:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in backend_names()]
    if unknown:
        raise ConfigError(f"unknown backend(s) {unknown} in --compare; choose from {backend_names()}")
    return names


def _exports_here(name: str) -> bool:
    return get_backend(name).exports_here


def _open_source(source: Path) -> dict:
    if source.is_file():
        return {}
    if source.is_dir():
        return open_artifact(source)[1]
    raise ArtifactError(f"{source} does not exist; pass an artifact folder or a model.pt")


# What tells artifacts of one backend apart in a label, in this order: int8 vs fp32, custom vs standard ops.
_DISTINGUISHING = ("precision", "ops")


def _unique_labels(targets: list[ProfiledModel]) -> list[ProfiledModel]:
    """Labels that say what each source is: the backend, then what differs among the sources that
    share it (precision int8/fp32, ops custom/standard, else the folder's name), #n as a last resort."""
    groups = collections.defaultdict(list)
    for target in targets:
        groups[target.label].append(target)
    for label, group in groups.items():
        if len(group) == 1:
            continue
        keys = [key for key in _DISTINGUISHING if len({t.manifest.get(key) for t in group}) > 1]
        for target in group:
            parts = [str(target.manifest.get(key)) for key in keys if target.manifest.get(key)]
            target.label = " ".join([label, *parts])
        if len({t.label for t in group}) < len(group) and len({t.source.name for t in group}) == len(group):
            for target in group:
                target.label = f"{target.label} {target.source.name}"
    counts, seen = collections.Counter(t.label for t in targets), collections.Counter()
    for target in targets:
        if counts[target.label] > 1:
            seen[target.label] += 1
            target.label = f"{target.label}#{seen[target.label]}"
    return targets


def plan_targets(sources, backend: str = "auto", compare: list[str] | None = None, workdir=None,
                 progress=lambda message: None) -> list[ProfiledModel]:
    """What to profile: each source with `backend`, or one source with each backend of `compare`.

    With `compare`, a model.pt runs "torch" itself and is exported on the fly (into `workdir`, for
    this machine) for the backends that export here; an artifact folder only runs its own backend, so comparing
    backends on artifacts means passing one artifact per backend as several sources.

    Args:
        sources: artifact folders and/or model.pt files (several are compared interleaved).
        backend: "auto" or a backend name, for every source (ignored with `compare`).
        compare: backend names to compare on a single source.
        workdir: folder for on-the-fly exports (needed when `compare` exports).
        progress: called with a message before each export.
    Returns:
        The targets, with unique labels; the first is the baseline of the ratios.
    Raises:
        ConfigError: an invalid combination; ArtifactError: an unreadable artifact.
    """
    sources = [Path(s) for s in sources]
    if not sources:
        raise ConfigError("pass at least one artifact folder or model.pt")
    if not compare:
        targets = []
        for source in sources:
            manifest = _open_source(source)
            name = resolve_backend_name(backend, source, manifest)
            targets.append(ProfiledModel(name, source, name, manifest))
        return _unique_labels(targets)
    if len(sources) != 1:
        raise ConfigError("--compare takes one source; to compare several artifacts, pass them without --compare")
    source = sources[0]
    manifest = _open_source(source)
    parse_backends(",".join(compare))
    targets = []
    for name in compare:
        if source.is_dir():
            if name != manifest.get("backend"):
                raise ConfigError(
                    f"{source} is a {manifest.get('backend')!r} artifact and cannot run {name!r}; compare "
                    "artifacts by passing one folder per backend (lbdeploy profile a/ b/), or pass the model.pt"
                )
            targets.append(ProfiledModel(name, source, name, manifest))
        elif get_backend(name).exporter is None:
            targets.append(ProfiledModel(name, source, name, {}))
        elif _exports_here(name):
            targets.append(_export_for(source, name, workdir, progress))
        else:
            raise ConfigError(f"backend {name!r} cannot be exported on the fly; export {source} with "
                              f"`lbdeploy export` on its device and profile the artifact")
    return _unique_labels(targets)


def _export_for(model_pt: Path, backend: str, workdir, progress) -> ProfiledModel:
    if workdir is None:
        raise ConfigError("exporting for --compare needs a work folder")
    out = Path(workdir) / backend
    progress(f"exporting {model_pt} for {backend} (compare)")
    manifest = export_for_this_machine(model_pt, out, backend)
    return ProfiledModel(backend, out, backend, manifest, exported=True)


def eval_columns(paths, backend: str, compare: list[str] | None, workdir: Path,
                 progress: Progress = lambda message: None) -> list[tuple[str, str, str]]:
    """(label, path, backend) for every column of `lbdeploy eval`.

    Args:
        paths: model.pt files and/or artifact folders. backend: the backend without --compare.
        compare: backend names to put side by side (None: `backend` alone).
        workdir: folder for on-the-fly exports. progress: called before each export.
    Raises:
        ConfigError: no backend of the list runs any of the sources.
    """
    names = compare or [backend]
    columns = []
    for index, path in enumerate(paths):
        for name in names:
            runs_on = path
            if compare and Path(path).is_file() and _exports_here(name):
                runs_on = workdir / f"{index}-{name}"
                progress(f"exporting {path} for {name} to compare")
                export_for_this_machine(path, runs_on, name)
            try:
                resolved = resolve_backend_name(name, Path(runs_on), {})
            except ConfigError:
                if compare:
                    continue  # this backend does not run this kind of source (model.pt vs artifact)
                raise
            label = resolved if len(paths) == 1 else f"{resolved}:{Path(path).name}"
            columns.append((label, str(runs_on), name))
    if not columns:
        raise ConfigError(f"none of the backends {names} runs {list(paths)}: torch runs a model.pt, "
                          "the others an exported artifact folder")
    return columns
