"""The backend registry: one record per inference engine, registered through the entry-point group
`lbdeploy.backends`, so a package outside this repository adds a backend by declaring one.

A record (`BackendSpec`) carries everything about its backend:

- what it is: name (the `--backend` value), description, the pip extra it needs at run time and
  the modules that extra provides;
- what it can run: `ops` (custom TernaryConv kernels, standard ONNX ops, or both), the
  `precisions` its artifacts may hold besides float32, whether an artifact for this machine can
  be exported on the fly (`exports_here`, for eval/profile --compare);
- its part of the artifact format: the manifest section it writes (`section`), that section's
  field schema (checked by lbdeploy.artifact) and the files of the section a backend loads as
  code or model (which must be hash-listed);
- its parts in the upper layers, as objects: the runtime class (`runtime`), the export step
  (`exporter`, None for backends that run model.pt files) and extra `lbdeploy doctor` checks.

The core never names those layers: each record is an object in the module of the highest layer it
uses (the built-in ones in lbdeploy.exporters.backends.<name> and, for torch,
lbdeploy.runtime.backends.torch_backend), declared as an entry point in pyproject.toml:

    [project.entry-points."lbdeploy.backends"]
    openvino = "lbdeploy_openvino.backend:BACKEND"

`backends()` loads the group once, on first use (an installed distribution's entry points, plus,
in a source checkout, those its pyproject.toml declares). docs/architecture.md, "Adding a
backend", lists the steps.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

from lbdeploy.errors import ConfigError

GROUP = "lbdeploy.backends"
CUSTOM, STANDARD = "custom", "standard"  # the `--ops` values


@dataclass(frozen=True)
class BackendSpec:
    """One backend and all its parts (see the module docstring).

    Attributes:
        name: the `--backend` value. description: the engine, in words. extra: its pip extra.
        runtime: the runtime class, built as `runtime(artifact_dir_or_model_pt, manifest, **opts)`.
        exporter: the export step class (an lbdeploy.exporters.backends.ExportStep); None: the
            backend runs model.pt files and has nothing to export.
        ops: the `--ops` values it runs: (CUSTOM,), (STANDARD,) or both; the first is its default.
        precisions: the `--quantize` precisions its artifacts can hold besides float32.
        exports_here: an artifact for this machine can be exported on the fly (eval/profile --compare).
        section: the manifest section it writes (None: none); section_schema: field -> accepted
            JSON types of that section; loadable: the fields of the section naming files it loads.
        built_on_device: the fields of the section (dotted for nested ones, "plugin.library") naming
            loadable files built on the board after export: they need not be listed in `files`
            until built, but must lie inside the folder (lbdeploy.artifact.device_built_files).
        doctor_checks: extra `lbdeploy doctor` checks, each `check(context) -> Check` (runtime.doctor).
        serves: target name -> this backend's settings there, for targets of lbdeploy.targets whose
            records do not list it (a backend from another package); the built-in ones are listed
            by the target records themselves.
        imports: the top-level modules its engine needs: a command that misses one is told to
            install `extra` (lbdeploy.extras).
        rank: where it is listed among the choices (lowest first; the built-in ones 0..3).
    """

    name: str
    description: str
    extra: str
    runtime: type
    exporter: type | None = None
    ops: tuple[str, ...] = (CUSTOM, STANDARD)
    precisions: tuple[str, ...] = ()
    exports_here: bool = False
    section: str | None = None
    section_schema: dict = field(default_factory=dict)
    loadable: tuple[str, ...] = ()
    built_on_device: tuple[str, ...] = ()
    doctor_checks: tuple[Callable, ...] = ()
    serves: dict = field(default_factory=dict)
    imports: tuple[str, ...] = ()
    rank: int = 100

    def load_runtime(self) -> type:
        """The runtime class (kept for callers that ask for it by this name)."""
        return self.runtime

    def load_exporter(self) -> type:
        """The export-step class.

        Raises:
            ConfigError: the backend has no export step.
        """
        if self.exporter is None:
            raise ConfigError(f"backend {self.name!r} runs model.pt checkpoints and has nothing to export")
        return self.exporter

    def choose_ops(self, asked: str | None) -> str:
        """The ops an export for this backend uses: `asked`, else the backend's default.

        Raises:
            ConfigError: the backend does not run the ops asked for.
        """
        chosen = asked or self.ops[0]
        if chosen not in self.ops:
            raise ConfigError(f"backend {self.name!r} runs --ops {' or '.join(self.ops)}, not {chosen!r}")
        return chosen

    def loadable_files(self, manifest: dict) -> list[str]:
        """The files its manifest section names for it to load (to be hash-listed in `files`)."""
        section = manifest.get(self.section) if self.section else None
        if not isinstance(section, dict):
            return []
        return [section[key] for key in self.loadable if isinstance(section.get(key), str) and section[key]]

    def device_built_files(self, manifest: dict) -> list[str]:
        """The files its manifest section names that are built on the board (`built_on_device`)."""
        section = manifest.get(self.section) if self.section else None
        paths = []
        for dotted in self.built_on_device if isinstance(section, dict) else ():
            value = section
            for key in dotted.split("."):
                value = value.get(key) if isinstance(value, dict) else None
            if value is not None:
                paths.append(value)
        return paths


def _checkout_entry_points() -> list[metadata.EntryPoint]:
    """The group's entry points declared by the pyproject.toml of a source checkout (none when installed)."""
    import tomllib

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if not pyproject.is_file():
        return []
    project = tomllib.loads(pyproject.read_text()).get("project", {})
    if project.get("name") != "lbdeploy":
        return []
    declared = project.get("entry-points", {}).get(GROUP, {})
    return [metadata.EntryPoint(name, value, GROUP) for name, value in declared.items()]


def _entry_points() -> list[metadata.EntryPoint]:
    by_name = {point.name: point for point in metadata.entry_points(group=GROUP)}
    by_name.update({point.name: point for point in _checkout_entry_points()})
    return list(by_name.values())


@functools.cache
def backends() -> dict[str, BackendSpec]:
    """Every registered backend by name, by rank (the built-in ones first) then name.

    An entry point that cannot be imported, or names something else than a BackendSpec of its
    own name, is left out with a one-line RuntimeWarning naming it: a broken package does not
    take the other backends (or the CLI) down with it.
    """
    registered = {}
    for point in _entry_points():
        try:
            spec = point.load()
        except ImportError as err:
            warnings.warn(f"the {point.name!r} backend ({point.value}, group {GROUP}) cannot be imported and "
                          f"is left out: {err}", RuntimeWarning, stacklevel=2)
            continue
        if not isinstance(spec, BackendSpec) or spec.name != point.name:
            warnings.warn(f"entry point {point.name} = {point.value} (group {GROUP}) is left out: it must name a "
                          f"lbdeploy.backends.BackendSpec called {point.name!r}", RuntimeWarning, stacklevel=2)
            continue
        registered[spec.name] = spec
    return dict(sorted(registered.items(), key=lambda item: (item[1].rank, item[0])))


def backend_names() -> list[str]:
    """Every `--backend` name."""
    return list(backends())


def export_backends() -> list[str]:
    """The backends with an export step (`lbdeploy export --backend`)."""
    return [name for name, spec in backends().items() if spec.exporter is not None]


def get_backend(name: str) -> BackendSpec:
    """The record of backend `name`.

    Raises:
        ConfigError: an unknown name (the message lists the choices).
    """
    if name not in backends():
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(backends())}")
    return backends()[name]
