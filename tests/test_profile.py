"""`lbdeploy profile` on real backends: JSON schema and sanity, per-op breakdowns from ONNX Runtime,
the TVM VM and torch, interleaved comparisons, the PNG plot, the RPC path against a local TVM
tracker + server, and one-line errors. Speed is never asserted (bench/ measures it)."""

import json
import time

import numpy as np
import pytest
from click.testing import CliRunner

from lbdeploy.cli import main
from lbdeploy.kernels.elf import host_arch
from runtime_artifacts import pool_manifest, pool_model, write_artifact

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


def _profile(*args):
    return CliRunner().invoke(main, ["profile", *map(str, args)])


def _json(*args) -> dict:
    result = _profile(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _assert_one_line_error(result, fragment):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and fragment in lines[0], result.output


@pytest.fixture(scope="module")
def pool_artifact(tmp_path_factory):
    return write_artifact(tmp_path_factory.mktemp("pool"), pool_model(), pool_manifest())


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory):
    """A one-stack LBRN-S at 64x64 (fast everywhere)."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    from lbdeploy.checkpoint import save_checkpoint
    from lbdeploy.models import build_model

    torch.manual_seed(0)
    model = build_model("lbrn-s", stacks=1, feats=32, input_size=(64, 64), depth=2, seed=5)
    return save_checkpoint(tmp_path_factory.mktemp("pt") / "model.pt", model)


def _export(model_pt, out, backend):
    from lbdeploy.exporters.export import export_model

    export_model(model_pt, out, target="x86" if host_arch() == "x86_64" else "arm64", backend=backend,
                 kernels="ternary")
    return out


@pytest.fixture(scope="module")
def ort_artifact(model_pt, tmp_path_factory):
    """The model exported for ONNX Runtime with TernaryConv nodes and our kernel library."""
    from lbdeploy.errors import KernelLibraryError
    from lbdeploy.kernels.build import compiler_for

    try:
        compiler_for(host_arch())
    except KernelLibraryError as err:
        pytest.skip(f"cannot build the TernaryConv kernel library here: {err}")
    return _export(model_pt, tmp_path_factory.mktemp("ort") / "artifact", "ort")


@pytest.fixture(scope="module")
def tvm_artifact(model_pt, tmp_path_factory):
    pytest.importorskip("tvm", reason="apache-tvm is not installed (pip install 'lbdeploy[tvm]')")
    return _export(model_pt, tmp_path_factory.mktemp("tvm") / "artifact", "tvm")


def _check_result(result, runs, batch):
    latency = result["latency_ms"]
    assert result["runs"] == runs and len(result["samples_ms"]) == runs and result["batch"] == batch
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert latency["min"] <= latency["mean"] <= latency["max"]
    assert latency["min"] == pytest.approx(min(result["samples_ms"]))
    assert latency["p50"] == pytest.approx(float(np.median(result["samples_ms"])))
    throughput = result["throughput"]
    assert throughput["p50_images_per_s"] == pytest.approx(batch * 1e3 / latency["p50"])
    assert throughput["mean_images_per_s"] == pytest.approx(batch * 1e3 / latency["mean"])
    assert result["load_s"] > 0 and result["first_run_ms"] > 0


def _names(rows):
    return [row["name"] for row in rows]


def _check_rows(breakdown):
    assert breakdown["available"] and breakdown["by_type"] and breakdown["by_node"], breakdown
    for rows in (breakdown["by_type"], breakdown["by_node"]):
        assert 0 < sum(row["share"] for row in rows) <= 1 + 1e-9
        totals = [row["total_ms"] for row in rows]
        assert totals == sorted(totals, reverse=True)
        for row in rows:
            assert row["per_run_ms"] == pytest.approx(row["total_ms"] / breakdown["runs"]) and row["calls"] > 0


def test_json_schema_latency_and_ort_breakdown(ort_artifact):
    document = _json(ort_artifact, "--runs", 7, "--warmup", 2, "--batch", 2, "--threads", 1, "--op-runs", 2)
    assert document["schema"] == "lbdeploy-profile/1" and document["settings"] == {"runs": 7, "warmup": 2}
    assert document["machine"]["cpus"] >= 1 and document["memory"]["peak_rss_mb"] > 0
    [result] = document["results"]
    assert result["backend"] == "ort" and result["label"] == document["baseline"] == "ort"
    assert result["threads"] == 1 and not result["exported_on_the_fly"] and result["remote"] is None
    _check_result(result, runs=7, batch=2)
    assert isinstance(result["memory"]["rss_growth_mb"], float)
    assert document["ratios"] == {"ort": {"p50": 1.0, "mean": 1.0, "throughput": 1.0}}
    breakdown = result["breakdown"]
    _check_rows(breakdown)
    assert breakdown["runs"] == 2 and "TernaryConv" in _names(breakdown["by_type"])
    ternary_nodes = [row for row in breakdown["by_node"] if row["name"].endswith("(TernaryConv)")]
    assert ternary_nodes and all(row["calls"] == 2 for row in ternary_nodes)  # once per run


def test_tvm_breakdown_names_the_module_kernels(tvm_artifact):
    document = _json(tvm_artifact, "--runs", 5, "--warmup", 1, "--op-runs", 2, "--top", 50)
    [result] = document["results"]
    _check_result(result, runs=5, batch=1)
    breakdown = result["breakdown"]
    _check_rows(breakdown)
    assert "ternary_conv" in _names(breakdown["by_type"])
    assert any(name.startswith("fused_conv2d") for name in _names(breakdown["by_type"]))
    library = (tvm_artifact / "tvm" / "model.so").read_bytes()
    kernels = [name for name in _names(breakdown["by_node"]) if not name.startswith("vm.")]
    assert kernels and all(name.encode() in library for name in kernels)


def test_compare_exports_a_model_pt_on_the_fly(model_pt):
    document = _json(model_pt, "--compare", "torch,ort", "--runs", 4, "--warmup", 1, "--op-runs", 1, "--top", 500)
    torch_result, ort_result = document["results"]
    assert (torch_result["label"], ort_result["label"]) == ("torch", "ort") and document["baseline"] == "torch"
    assert ort_result["exported_on_the_fly"] and not torch_result["exported_on_the_fly"]
    for result in document["results"]:
        _check_result(result, runs=4, batch=1)
    ratios = document["ratios"]
    assert ratios["torch"]["p50"] == 1.0
    assert ratios["ort"]["p50"] == pytest.approx(ort_result["latency_ms"]["p50"] / torch_result["latency_ms"]["p50"])
    _check_rows(torch_result["breakdown"])
    assert any(name.startswith("aten::") for name in _names(torch_result["breakdown"]["by_type"]))
    assert any("(TernaryConv2d)" in name or "(Conv2d)" in name for name in _names(torch_result["breakdown"]["by_node"]))


def test_several_artifacts_are_interleaved_and_plotted(ort_artifact, tvm_artifact, tmp_path):
    from PIL import Image

    plot = tmp_path / "plots" / "profile.png"
    document = _json(ort_artifact, tvm_artifact, "--runs", 6, "--warmup", 1, "--op-runs", 1, "--plot", plot)
    assert [r["label"] for r in document["results"]] == ["ort", "tvm"] and set(document["ratios"]) == {"ort", "tvm"}
    for result in document["results"]:
        _check_result(result, runs=6, batch=1)
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width == 900 and image.height > 300
        assert len(image.convert("RGB").getcolors(1 << 16)) > 2  # something was drawn


def test_text_output_on_the_same_artifact_twice(pool_artifact):
    result = _profile(pool_artifact, pool_artifact, "--runs", 3, "--warmup", 1)
    assert result.exit_code == 0, result.output
    assert "p50 ms" in result.stdout and "ort#1" in result.stdout and "ort#2" in result.stdout
    assert "AveragePool" in result.stdout  # the breakdown of the pool graph
    # loaded in one process, the second copy's load time and memory growth would say nothing
    assert "load s" not in result.stdout and "rss+ MB" not in result.stdout and "left out" in result.stdout
    alone = _profile(pool_artifact, "--runs", 3, "--warmup", 1, "--op-runs", 0)
    assert alone.exit_code == 0 and "load s" in alone.stdout and "rss+ MB" in alone.stdout


@pytest.mark.parametrize("args, fragment", [
    (["--compare", "ort,tvm"], "cannot run 'tvm'"),
    (["--compare", "ort,nope"], "unknown backend"),
    (["--compare", "ort"], "at least two"),
    (["--backend", "torch"], "model.pt"),
    (["--backend", "tensorrt"], "TensorRT"),
    (["--key", "rpi4"], "--rpc"),
    (["--rpc", "127.0.0.1:9"], "TVM modules"),
    (["--rpc", "nocolon"], "HOST:PORT"),
])
def test_errors_are_one_line_and_exit_2(pool_artifact, args, fragment):
    _assert_one_line_error(_profile(pool_artifact, *args, "--runs", 2), fragment)


def test_bad_artifact_and_fixed_batch_are_refused(pool_artifact, tmp_path):
    (tmp_path / "empty").mkdir()
    _assert_one_line_error(_profile(tmp_path / "empty"), "manifest.json")
    fixed = write_artifact(tmp_path / "fixed", pool_model(batch=2), pool_manifest(batch=2))
    _assert_one_line_error(_profile(fixed, "--batch", 1), "--batch 2")
    assert _profile(fixed, "--batch", 2, "--runs", 2).exit_code == 0


def test_tvm_module_batch_is_checked(tvm_artifact):
    _assert_one_line_error(_profile(tvm_artifact, "--batch", 2), "compiled for batch 1")


# --- remote boards through TVM RPC ------------------------------------------------------------------

@pytest.fixture
def rpc_tracker():
    """A TVM RPC tracker and one server registered under key "test-board", both on 127.0.0.1."""
    for module in ("tornado", "cloudpickle", "psutil"):
        pytest.importorskip(module, reason=f"TVM's RPC tracker and server need {module} (pip install {module})")
    from tvm import rpc
    from tvm.rpc.server import Server
    from tvm.rpc.tracker import Tracker

    tracker = Tracker("127.0.0.1", port=19190, port_end=19290, silent=True)
    server = Server("127.0.0.1", port=19300, port_end=19400, tracker_addr=("127.0.0.1", tracker.port),
                    key="test-board", silent=True)
    try:
        session = rpc.connect_tracker("127.0.0.1", tracker.port)
        for _ in range(100):  # the server registers asynchronously
            if "test-board" in session.summary()["queue_info"]:
                break
            time.sleep(0.1)
        session.close()
        yield tracker
    finally:
        server.terminate()
        tracker.terminate()


@pytest.mark.tvm
def test_rpc_profile_through_a_local_tracker(tvm_artifact, rpc_tracker):
    address = f"127.0.0.1:{rpc_tracker.port}"
    _assert_one_line_error(_profile(tvm_artifact, "--rpc", address, "--key", "other-board"), "no board with key")
    document = _json(tvm_artifact, "--rpc", address, "--key", "test-board", "--runs", 12, "--warmup", 2)
    [result] = document["results"]
    _check_result(result, runs=12, batch=1)
    assert result["remote"] == {"address": address, "key": "test-board"} and result["label"] == f"tvm@{address}"
    assert not result["breakdown"]["available"] and "RPC" in result["breakdown"]["note"]
    assert result["memory"]["rss_growth_mb"] is None and document["memory"]["peak_rss_mb"] is None


@pytest.mark.tvm
def test_rpc_profile_on_a_server_without_tracker(tvm_artifact):
    pytest.importorskip("cloudpickle", reason="TVM's RPC server needs cloudpickle (pip install cloudpickle)")
    pytest.importorskip("psutil", reason="TVM's RPC server needs psutil (pip install psutil)")
    from tvm.rpc.server import Server

    server = Server("127.0.0.1", port=19400, port_end=19500, silent=True)
    try:
        document = _json(tvm_artifact, "--rpc", f"127.0.0.1:{server.port}", "--runs", 3, "--warmup", 1)
    finally:
        server.terminate()
    _check_result(document["results"][0], runs=3, batch=1)
    assert document["results"][0]["remote"]["key"] is None


@pytest.mark.tvm
def test_rpc_to_an_address_nobody_listens_on(tvm_artifact):
    pytest.importorskip("tvm", reason="apache-tvm is not installed")
    _assert_one_line_error(_profile(tvm_artifact, "--rpc", "127.0.0.1:9", "--rpc-timeout", 2), "cannot reach")
    _assert_one_line_error(_profile(tvm_artifact, "--rpc", "127.0.0.1:9", "--key", "k", "--rpc-timeout", 2),
                           "tracker")
