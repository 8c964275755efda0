"""`lbdeploy export` never loses data (exporters/atomic.py): a real CLI export SIGTERMed mid-way
leaves nothing behind, `-o .` is refused, stale temporaries of dead exports are cleaned."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lbdeploy.exporters.atomic import remove_stale_temporaries
from lbdeploy.checkpoint import save_checkpoint
from lbdeploy.models import build_model

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_pt(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("pt") / "m.pt", build_model("lbrn-s", stacks=1, input_size=(64, 64)))


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
    for folder in (stale, live, other):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"x" * 100)
    assert remove_stale_temporaries(tmp_path / "out") == [stale]
    assert not stale.exists() and live.exists() and other.exists()
