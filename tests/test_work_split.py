"""The kernel core's work split (lbdeploy::WorkSplit in lbdeploy/kernels/core/plan.h), checked by a
native program (tests/native/work_split_check.cpp) compiled here against the core's plan.cc."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "lbdeploy" / "kernels" / "core"


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_work_split_covers_every_tile_and_block_once(tmp_path):
    program = tmp_path / "work_split_check"
    subprocess.run(
        ["g++", "-std=c++17", "-O1", "-Wall", "-Werror", f"-I{CORE}", str(REPO / "tests" / "native" / "work_split_check.cpp"),
         str(CORE / "plan.cc"), "-o", str(program)],
        check=True, capture_output=True, text=True,
    )
    done = subprocess.run([str(program)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "work split check passed"
