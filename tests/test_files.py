"""lbdeploy/files.py: a file is replaced whole or not at all, with ordinary permissions."""

import os
import stat

import pytest

from lbdeploy.files import replace_bytes, replace_file


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model.engine"
    target.write_bytes(b"old")

    def half_then_fail(temporary):
        temporary.write_bytes(b"ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_file(target, half_then_fail)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.engine"]


def test_the_new_file_replaces_the_old_with_ordinary_permissions(tmp_path):
    target = tmp_path / "state.pt"
    target.write_bytes(b"old")
    umask = os.umask(0o022)
    try:
        assert replace_bytes(target, b"new") == target
    finally:
        os.umask(umask)
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's 0600
