"""The structure of the package: the layer contract, and one registry per concept that every
command, table and document is generated from (docs/architecture.md)."""

import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from lbdeploy.cli import main
from lbdeploy.exporters.backends import ExportStep
from lbdeploy.backends import backends, export_backends
from lbdeploy.errors import ConfigError
from lbdeploy.targets import ALIASES, TARGETS, get_target, resolve, target_names, target_table_markdown
from lbdeploy.runtime.backends.base import runtime_choices

REPO = Path(__file__).resolve().parents[1]


def test_layers_only_import_downward():
    """import-linter's layers contract (pyproject.toml), lazy imports included."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.fail("lint-imports is not installed; install the dev extra (pip install -e '.[dev]')")
    result = subprocess.run([lint, "--no-cache", "--no-logo"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


LAYER_FOLDERS = ("runtime", "exporters", "workflows", "commands", "cli")


def test_every_import_uses_the_lbdeploy_namespace():
    """The layer folders are importable as bare names from a checkout (the repository root is on
    sys.path), but installed they exist only as lbdeploy.*: a bare `from runtime...` would work
    here and break in the wheel, and would load a module twice under two names."""
    import re

    bare = re.compile(rf"^\s*(from|import)\s+({'|'.join(LAYER_FOLDERS)})(\.|\s|$)", re.M)
    offenders = []
    for folder in ("lbdeploy", "tests", "bench", "scripts", *LAYER_FOLDERS[:-1]):
        for path in (REPO / folder).rglob("*.py"):
            if bare.search(path.read_text()):
                offenders.append(str(path.relative_to(REPO)))
    assert (REPO / "lbdeploy" / "runtime").is_symlink() and (REPO / "lbdeploy" / "cli.py").is_symlink()
    assert not offenders, offenders


def test_targets_command_lists_every_target_value():
    result = CliRunner().invoke(main, ["targets"])
    assert result.exit_code == 0, result.output
    listed = result.output
    for name in target_names():
        assert name in listed, name


def _choices(command: str, option: str) -> list[str]:
    params = {p.name: p for p in main.commands[command].params}
    assert isinstance(params[option].type, click.Choice)
    return list(params[option].type.choices)


def test_cli_choices_come_from_the_registries():
    assert _choices("export", "target") == target_names()
    assert _choices("export", "backend") == export_backends() == ["ort", "tvm", "tensorrt"]
    for command in ("infer", "serve", "profile", "eval"):
        assert _choices(command, "backend") == runtime_choices() == ["auto", "torch", "ort", "tvm", "tensorrt"], command


def test_docs_targets_is_the_generated_file():
    """docs/targets.md is exactly what `lbdeploy targets --markdown` prints (docs/architecture.md, "Adding a board")."""
    result = CliRunner().invoke(main, ["targets", "--markdown"])
    assert result.exit_code == 0 and result.output == target_table_markdown()
    assert (REPO / "docs" / "targets.md").read_text() == result.output, \
        "regenerate it: lbdeploy targets --markdown > docs/targets.md"


def test_every_target_backend_is_registered_and_exportable():
    for target in TARGETS.values():
        assert target.backends, target.name
        for backend in target.backends:
            assert backend in export_backends(), (target.name, backend)
    assert not set(ALIASES) & set(TARGETS)


def test_every_backend_part_loads_with_its_interface():
    for spec in backends().values():
        runtime_class = spec.runtime
        assert callable(getattr(runtime_class, "run")) and isinstance(runtime_class.interleave_env, dict), spec.name
        if spec.exporter:
            assert issubclass(spec.exporter, ExportStep), spec.name


def test_aliases_and_backend_choice_resolve_through_the_registry():
    assert get_target("jetson") is TARGETS["jetson-orin"]
    assert resolve("rpi4") == (TARGETS["rpi4"], "ort")
    assert resolve("jetson-nano")[1] == "ort"  # the Nano's stock TensorRT is too old: its CPU is the default
    with pytest.raises(ConfigError, match="supports --backend ort or tvm, not 'tensorrt'"):
        resolve("rpi5", "tensorrt")
    with pytest.raises(ConfigError, match="lbdeploy targets"):
        get_target("rpi3")


def test_every_task_has_a_core_and_a_runtime_record():
    """docs/architecture.md, "Adding a task": each task is a record in both registries, and the
    server, `infer` and `eval` reach it through them."""
    from lbdeploy.runtime.tasks import RUNTIME_TASKS
    from lbdeploy.tasks import TASKS

    assert list(TASKS) == list(RUNTIME_TASKS) == ["pose", "saliency", "classification"]
    for name, record in RUNTIME_TASKS.items():
        assert record.task is TASKS[name] and record.predictor_class.task is TASKS[name]
        assert record.endpoints and record.metric, name


def test_backend_records_live_above_the_core():
    """The core names no module of an upper layer: each built-in record is an object of its own
    layer's module, found through the entry points of pyproject.toml."""
    import tomllib

    points = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["lbdeploy.backends"]
    assert set(points) == set(backends())
    for name, value in points.items():
        module = value.split(":")[0]
        assert module.startswith(("lbdeploy.runtime.", "lbdeploy.exporters.")), (name, value)
        assert backends()[name].runtime.__module__.startswith("lbdeploy.runtime.backends."), name
    assert "lbdeploy.runtime" not in (REPO / "lbdeploy" / "backends.py").read_text().replace(
        "lbdeploy.runtime.backends.torch_backend", "")  # the docstring's example of where a record lives


def test_a_missing_engine_names_the_extra_of_its_backend_record():
    from lbdeploy.extras import missing_extra_error

    for module, extra in (("onnxruntime", "ort"), ("tvm", "tvm"), ("cuda", "tensorrt"), ("fastapi", "serve")):
        err = ModuleNotFoundError(f"No module named {module!r}")
        err.name = f"{module}.sub"
        assert f"pip install 'lbdeploy[{extra}]'" in str(missing_extra_error(err)), module
    unknown = ModuleNotFoundError("No module named 'nothing_of_ours'")
    unknown.name = "nothing_of_ours"
    assert missing_extra_error(unknown) is None
