"""The trace cache (exporters/trace_cache.py): a re-export takes the traced graph from the cache, in
another process too; the key follows every input of the trace; damaged entries are dropped and the
network traced again; `off` writes nothing; the least recently used entries go beyond the limit."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from lbdeploy.checkpoint import save_checkpoint
from lbdeploy.exporters import trace_cache
from lbdeploy.exporters.export import export_model
from lbdeploy.exporters.folding import prepare_for_export
from lbdeploy.exporters.onnx import check_onnx
from lbdeploy.exporters.trace_cache import restore, store, trace_key
from lbdeploy.models import build_model

REPO = Path(__file__).resolve().parent.parent
SMALL = {"stacks": 1, "depth": 2, "input_size": (64, 64)}
CALL = {"input": "image", "outputs": ["heatmaps_0"], "ops": "custom", "opset": 18, "dynamic_batch": True}
CACHED = "ONNX graph from the trace cache"


@pytest.fixture
def traces(tmp_path, monkeypatch) -> Path:
    """An empty trace cache of this test's own."""
    folder = tmp_path / "traces"
    monkeypatch.setenv("LBDEPLOY_TRACE_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def small_pt(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("pt") / "m.pt", build_model("lbrn-s", **SMALL))


def _export(checkpoint, out) -> list[str]:
    messages = []
    manifest = export_model(checkpoint, out, target="x86", kernels="ternary", progress=messages.append)
    assert manifest["parity"]["passed"]
    return messages


def _wrapped(seed: int = 0):
    torch.manual_seed(seed)
    return prepare_for_export(build_model("lbrn-s", **SMALL).eval(), "custom")


def test_a_re_export_in_another_process_takes_the_identical_graph_from_the_cache(small_pt, traces, tmp_path, library):
    assert not any(CACHED in m for m in _export(small_pt, tmp_path / "first"))
    (entry,) = traces.glob("*.onnx")
    done = subprocess.run([sys.executable, str(REPO / "cli.py"), "export", str(small_pt), "--target", "x86",
                           "--kernels", "ternary", "-o", str(tmp_path / "again")],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert CACHED in done.stderr and "parity passed" in done.stdout
    assert (tmp_path / "again" / "model.onnx").read_bytes() == (tmp_path / "first" / "model.onnx").read_bytes()
    assert list(traces.glob("*.onnx")) == [entry]


def test_the_key_follows_every_input_of_the_trace(traces):
    x = torch.zeros(2, 3, 64, 64)
    key = trace_key(_wrapped(), x, CALL)
    assert key is not None and trace_key(_wrapped(), x, CALL) == key  # the same network built again
    assert trace_key(_wrapped(seed=1), x, CALL) != key  # other trained weights
    for change in ({"opset": 17}, {"ops": "standard"}, {"dynamic_batch": False}, {"outputs": ["y"]}):
        assert trace_key(_wrapped(), x, {**CALL, **change}) != key, change
    assert trace_key(_wrapped(), torch.zeros(2, 3, 128, 64), CALL) != key
    wrapped = _wrapped()
    next(wrapped.parameters()).data.view(-1)[0] += 1.0
    assert trace_key(wrapped, x, CALL) != key  # one weight
    wrapped = _wrapped()
    next(b for name, b in wrapped.named_buffers() if name.endswith("running_mean")).data.view(-1)[0] += 1.0
    assert trace_key(wrapped, x, CALL) != key  # one BatchNorm statistic
    wrapped = _wrapped()
    op = next(m for m in wrapped.modules() if type(m).__name__ == "TernaryConvOp")
    op.conv_args = (*op.conv_args[:3], 2)
    assert trace_key(wrapped, x, CALL) != key  # one setting (here, the groups of a conv)
    wrapped = _wrapped()
    wrapped.forward_hook = lambda y: y  # a setting the key cannot describe: no caching
    assert trace_key(wrapped, x, CALL) is None


def test_off_traces_every_time_and_writes_nothing(small_pt, tmp_path, monkeypatch):
    monkeypatch.setattr(trace_cache, "cache_folder", lambda kind: tmp_path / "cache" / kind)  # the default folder
    monkeypatch.setenv("LBDEPLOY_TRACE_CACHE", "off")
    assert trace_key(_wrapped(), torch.zeros(2, 3, 64, 64), CALL) is None
    assert not any(CACHED in m for m in _export(small_pt, tmp_path / "out"))
    assert not (tmp_path / "cache").exists()
    monkeypatch.delenv("LBDEPLOY_TRACE_CACHE")
    assert trace_cache.trace_folder() == tmp_path / "cache" / "traces"


def _identity_model(value: float) -> onnx.ModelProto:
    node = helper.make_node("Add", ["x", "c"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              [numpy_helper.from_array(np.full(1, value, np.float32), "c")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _entry(folder: Path, key: str, model: onnx.ModelProto, tmp_path: Path) -> Path:
    source = tmp_path / f"{key}-source.onnx"
    onnx.save(model, str(source))
    store(key, source)
    return folder / f"{key}.onnx"


def test_a_damaged_entry_is_removed_and_a_good_one_restored(traces, tmp_path):
    good = _entry(traces, "good", _identity_model(1.0), tmp_path)
    os.utime(good, (0, 0))
    assert restore("good", tmp_path / "got.onnx", check_onnx)
    assert onnx.load(str(tmp_path / "got.onnx")) == _identity_model(1.0) and good.stat().st_mtime > 0
    assert not restore("missing", tmp_path / "none.onnx", check_onnx) and not (tmp_path / "none.onnx").exists()

    truncated = _entry(traces, "truncated", _identity_model(1.0), tmp_path)
    truncated.write_bytes(truncated.read_bytes()[:20])
    assert not restore("truncated", tmp_path / "t.onnx", check_onnx)
    assert not truncated.exists() and not (tmp_path / "t.onnx").exists()


def test_an_entry_with_invalid_ternary_codes_is_traced_again(small_pt, traces, tmp_path, library):
    _export(small_pt, tmp_path / "first")
    (entry,) = traces.glob("*.onnx")
    model = onnx.load(str(entry))
    node = next(n for n in model.graph.node if n.op_type == "TernaryConv")
    weights = next(i for i in model.graph.initializer if i.name == node.input[1])
    weights.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(weights).shape, 0xFF, np.uint8), weights.name))
    onnx.save(model, str(entry))  # code 3 in every weight: check_onnx refuses it
    assert not any(CACHED in m for m in _export(small_pt, tmp_path / "again"))
    check_onnx(onnx.load(str(entry)))  # the entry was written anew by the trace
    assert (tmp_path / "again" / "model.onnx").read_bytes() == (tmp_path / "first" / "model.onnx").read_bytes()


def test_least_recently_used_entries_go_beyond_the_limit(traces, tmp_path, monkeypatch):
    entries = [_entry(traces, f"e{i}", _identity_model(float(i)), tmp_path) for i in range(3)]
    for age, entry in enumerate(reversed(entries)):
        os.utime(entry, (1000 - age, 1000 - age))  # e0 the oldest
    assert restore("e0", tmp_path / "used.onnx", check_onnx)  # e0 is now the most recent
    monkeypatch.setattr(trace_cache, "MAX_BYTES", 2 * entries[0].stat().st_size + 1)
    _entry(traces, "e3", _identity_model(3.0), tmp_path)
    assert sorted(p.stem for p in traces.glob("*.onnx")) == ["e0", "e3"]


def test_a_cache_folder_that_cannot_be_used_is_skipped(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LBDEPLOY_TRACE_CACHE", str(blocker))
    source = tmp_path / "m.onnx"
    onnx.save(_identity_model(1.0), str(source))
    store("k", source)  # nothing to write into: skipped
    assert not restore("k", tmp_path / "got.onnx", check_onnx) and blocker.read_text() == "not a folder"
