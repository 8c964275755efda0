"""The order of `make test`'s files: scripts/file-seconds.py reads a real pytest JUnit report, and
tests/conftest.py puts the longest files first, keeping each file's tests in order."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from conftest import longest_files_first

REPO = Path(__file__).resolve().parent.parent


def test_a_junit_report_becomes_seconds_per_file(tmp_path):
    suite = tmp_path / "tests"
    suite.mkdir()
    (suite / "test_alpha.py").write_text("def test_one():\n    pass\n\ndef test_two():\n    pass\n")
    (suite / "test_beta.py").write_text("class TestGroup:\n    def test_three(self):\n        pass\n")
    report = tmp_path / "report.xml"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                          f"--junitxml={report}", "--rootdir", str(tmp_path), str(suite)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    out = tmp_path / "file_seconds.json"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "file-seconds.py"), str(report), str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seconds = json.loads(out.read_text())
    assert set(seconds) == {"test_alpha.py", "test_beta.py"}
    assert all(value >= 0 for value in seconds.values())
    assert list(seconds.values()) == sorted(seconds.values(), reverse=True)


def test_the_script_names_its_arguments():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "file-seconds.py")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "file-seconds.py REPORT.xml" in done.stderr


def test_longest_files_go_first_and_each_file_keeps_its_order():
    def item(name, test):
        return SimpleNamespace(path=Path("tests") / name, name=test)

    items = [item("test_a.py", "1"), item("test_b.py", "1"), item("test_a.py", "2"), item("test_c.py", "1"),
             item("test_b.py", "2"), item("test_d.py", "1")]
    ordered = longest_files_first(items, {"test_b.py": 90.0, "test_c.py": 300.0, "test_a.py": 5.0})
    assert [(i.path.name, i.name) for i in ordered] == [
        ("test_c.py", "1"), ("test_b.py", "1"), ("test_b.py", "2"), ("test_a.py", "1"), ("test_a.py", "2"),
        ("test_d.py", "1")]  # unlisted: last

