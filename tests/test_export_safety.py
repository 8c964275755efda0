"""`lbdeploy export` never loses data (exporters/atomic.py): a real CLI export SIGTERMed mid-way
leaves nothing behind, `-o .` is refused, stale temporaries of dead exports are cleaned, a folder
that appears at `-o` during an export is never replaced (issue 24, 1), `--force` deletes only what
is provably an artifact and the cleanup only what is provably an export's temporary (issue 24, 2)."""

import json

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lbdeploy.artifact import PARTIAL_MARKER
from lbdeploy.errors import ExportError
from lbdeploy.exporters.atomic import remove_stale_temporaries
from lbdeploy.exporters.export import export_model
from lbdeploy.checkpoint import save_checkpoint
from lbdeploy.models import build_model

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_pt(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("pt") / "m.pt", build_model("lbrn-s", stacks=1, depth=2, input_size=(64, 64)))


def _cli(*args, cwd, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(REPO / "cli.py"), *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_sigterm_during_export_leaves_no_temporary_and_keeps_the_old_artifact(small_pt, tmp_path):
    done = _cli("export", str(small_pt), "-o", "out", cwd=tmp_path)
    assert done.wait(timeout=600) == 0, done.stderr.read()
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    proc = _cli("export", str(small_pt), "-o", "out", "--force", cwd=tmp_path)
    # wait until the export has created its temporary folder, then SIGTERM it
    deadline = time.monotonic() + 300
    while not any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "export ended before writing anything"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .out.tmp-*, no .out.old-*
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before


def test_output_dot_with_force_is_refused_in_one_line(small_pt, tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    proc = _cli("export", str(small_pt), "-o", ".", "--force", cwd=tmp_path)
    proc.wait(timeout=300)
    stderr = proc.stderr.read()
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "current folder" in errors[0] and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_stale_temporaries_of_dead_exports_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.tmp-{dead.pid}-abc"
    live = tmp_path / f".out.tmp-{os.getpid()}-def"
    other = tmp_path / f".other.tmp-{dead.pid}-ghi"
    look_alike = tmp_path / f".out.tmp-{dead.pid}-mine"  # a user's folder: no marker of ours
    copied = tmp_path / f".out.tmp-{dead.pid}-copy"  # a marker naming another folder
    for folder in (stale, live, other, look_alike, copied):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"x" * 100)
        (folder / PARTIAL_MARKER).write_text(folder.name)
    (look_alike / PARTIAL_MARKER).unlink()
    (copied / PARTIAL_MARKER).write_text(stale.name)
    assert remove_stale_temporaries(tmp_path / "out") == [stale]
    assert not stale.exists() and live.exists() and other.exists()
    assert (look_alike / "model.onnx").exists() and (copied / "model.onnx").exists()


def _wait_for_temporary(proc, folder: Path, name: str) -> None:
    deadline = time.monotonic() + 600
    while not any(p.name.startswith(f".{name}.tmp-") for p in folder.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "export ended before writing anything"
        time.sleep(0.02)


def _one_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def test_a_folder_made_at_the_output_during_an_export_is_never_replaced(small_pt, tmp_path):
    """The issue's reproduction: `export -o late &`, then `mkdir late; echo x > late/thesis.tex`."""
    proc = _cli("export", str(small_pt), "-o", "late", cwd=tmp_path)
    _wait_for_temporary(proc, tmp_path, "late")
    (tmp_path / "late").mkdir()
    (tmp_path / "late" / "thesis.tex").write_text("x")
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 2 and "appeared while exporting" in _one_error(stderr)
    assert (tmp_path / "late" / "thesis.tex").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late"]


def test_concurrent_exports_to_one_output_keep_exactly_one(small_pt, tmp_path):
    procs = [_cli("export", str(small_pt), "-o", "same", cwd=tmp_path) for _ in range(2)]
    results = [(proc.wait(timeout=900), proc.stderr.read()) for proc in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    assert "appeared while exporting" in _one_error(next(err for rc, err in results if rc == 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same"]
    assert json.loads((tmp_path / "same" / "manifest.json").read_text())["format"] == "lbdeploy-artifact"


def test_a_file_written_into_the_artifact_during_a_forced_export_survives(small_pt, tmp_path):
    export_model(small_pt, tmp_path / "out", target="x86")
    proc = _cli("export", str(small_pt), "-o", "out", "--force", cwd=tmp_path)
    _wait_for_temporary(proc, tmp_path, "out")
    (tmp_path / "out" / "notes.txt").write_text("mine")
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 2 and "notes.txt" in _one_error(stderr)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("case", ["bare manifest", "user file inside an artifact", "symlink inside an artifact"])
def test_force_refuses_a_folder_that_is_not_provably_an_artifact(small_pt, tmp_path, case):
    out = tmp_path / "out"
    if case == "bare manifest":
        out.mkdir()
        (out / "manifest.json").write_text('{"format":"lbdeploy-artifact"}')
    else:
        export_model(small_pt, out, target="onnx", ops="standard")
    if case == "symlink inside an artifact":
        (out / "link").symlink_to(tmp_path)
    else:
        (out / "notes.txt").write_text("mine")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ExportError, match="nothing was touched"):
        export_model(small_pt, out, target="onnx", ops="standard", force=True)
    assert sorted(p.name for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_force_replaces_an_artifact_and_keeps_a_look_alike_temporary(small_pt, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = tmp_path / f".out7.tmp-{dead.pid}-mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x")
    export_model(small_pt, tmp_path / "out7", target="onnx", ops="standard")
    export_model(small_pt, tmp_path / "out7", target="onnx", ops="standard", force=True)
    assert (mine / "thesis.tex").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name, "out7"]
