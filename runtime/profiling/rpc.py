"""Profiling a TVM artifact on a remote board through TVM's RPC (`lbdeploy profile --rpc`).

    session = connect("10.0.0.5:9190", key="rpi4")        # through an RPC tracker
    session = connect("10.0.0.7:9090")                     # straight to an RPC server
    root, manifest = open_remote_artifact("out/", batch=1)   # checked before connecting
    measurement = profile_remote(session, root, manifest, runs=50, warmup=5, address="10.0.0.5:9190")

The artifact's module .so is uploaded to the board, loaded by the remote Relax VM and timed there
with the VM's time_evaluator (one call per repeat, so the RPC round trip is not in the figures).
The load time covers upload + load + VM creation. Memory and the per-op breakdown are not measured
remotely (the result says so). The board needs only the TVM runtime and `python -m tvm.exec.rpc_server`.

To support another remote device kind, map the manifest's "device" in `_remote_device`.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from lbdeploy.errors import ArtifactError, BackendUnavailable, ConfigError
from lbdeploy.runtime.backends.breakdown import Breakdown
from lbdeploy.runtime.profiling.measure import check_batch, make_feeds
from lbdeploy.runtime.profiling.report import Measurement, ProfiledModel

DEFAULT_TIMEOUT_S = 10.0
# Repeats per time_evaluator call: it discards one warm-up call each time, and the bar advances per chunk.
_CHUNK = 10


def parse_address(text: str) -> tuple[str, int]:
    """"host:port" -> (host, port).

    Raises:
        ConfigError: not of the form host:port.
    """
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--rpc {text!r} must be HOST:PORT (e.g. --rpc 192.168.1.20:9190)")
    return host, int(port)


def _probe(host: str, port: int, timeout_s: float, what: str) -> None:
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        raise BackendUnavailable(f"cannot reach the {what} at {host}:{port} ({err}); check that it runs "
                                 "and that this machine can reach it") from None


def connect(address: str, key: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
    """Open a TVM RPC session: through the tracker at `address` when `key` is given, else directly.

    Args:
        address: "host:port" of the tracker (with key) or of an RPC server (without).
        key: the device key the board registered with the tracker.
        timeout_s: how long to wait for the address to answer.
    Returns:
        A tvm.rpc.RPCSession.
    Raises:
        BackendUnavailable: TVM missing, address unreachable, no free board with that key.
        ConfigError: a malformed address.
    """
    try:
        from tvm import rpc
    except ImportError as err:
        raise BackendUnavailable("apache-tvm is not installed; pip install 'lbdeploy[tvm]'") from err
    host, port = parse_address(address)
    if key is None:
        _probe(host, port, timeout_s, "TVM RPC server")
        try:
            return rpc.connect(host, port, session_timeout=0)
        except (RuntimeError, OSError) as err:
            raise BackendUnavailable(f"the TVM RPC server at {address} refused the session ({err})") from None
    _probe(host, port, timeout_s, "TVM RPC tracker")
    try:
        tracker = rpc.connect_tracker(host, port)
        queues = tracker.summary().get("queue_info", {})
    except (RuntimeError, OSError) as err:
        raise BackendUnavailable(f"{address} does not answer as a TVM RPC tracker ({err})") from None
    if key not in queues:
        raise BackendUnavailable(f"no board with key {key!r} is registered at the tracker {address}; "
                                 f"registered keys: {sorted(queues) or 'none'}")
    if not queues[key].get("free"):
        raise BackendUnavailable(f"every board with key {key!r} at {address} is busy; try again later")
    try:
        return tracker.request(key, max_retry=1)
    except (RuntimeError, OSError) as err:
        raise BackendUnavailable(f"the tracker at {address} gave no session for key {key!r} ({err})") from None


def _remote_device(session, kind: str):
    if kind == "cpu":
        return session.cpu(0)
    if kind == "cuda":
        return session.cuda(0)
    raise ArtifactError(f"unknown TVM device {kind!r} in the manifest; re-export the artifact")


def open_remote_artifact(artifact_dir, batch: int = 1) -> tuple[Path, dict]:
    """Read and check a TVM artifact for a remote run (before any connection is made).

    Returns:
        (artifact folder, manifest).
    Raises:
        ConfigError: not a TVM artifact, or a batch other than the module's.
        ArtifactError: an unreadable or modified artifact.
    """
    from lbdeploy.artifact import open_artifact

    root, manifest = open_artifact(artifact_dir)
    if manifest.get("backend") != "tvm" or not manifest.get("tvm"):
        raise ConfigError(f"--rpc runs TVM modules, but {root} is a {manifest.get('backend')!r} artifact; "
                          "export it with `lbdeploy export --backend tvm --target <board>`")
    check_batch(manifest, batch, root)
    return root, manifest


def profile_remote(session, artifact_dir, manifest: dict, runs: int = 100, warmup: int = 10, batch: int = 1,
                   address: str = "", key: str | None = None, bar=None) -> Measurement:
    """Time a TVM artifact's module on the board behind `session`.

    Args:
        session: from `connect`.
        artifact_dir / manifest: from `open_remote_artifact` (a module built for the board's target).
        runs / warmup / batch: as `lbdeploy.runtime.profiling.profile`.
        address / key: recorded in the result.
        bar: a tqdm bar advanced per timed run (optional).
    Returns:
        The Measurement (memory and breakdown unavailable).
    """
    import tvm
    from tvm.runtime.vm import VirtualMachine

    info = manifest["tvm"]
    module_path = Path(artifact_dir) / info["module"]
    feeds = make_feeds(manifest, batch)
    started = time.perf_counter()
    session.upload(str(module_path))
    device = _remote_device(session, info.get("device", "cpu"))
    vm = VirtualMachine(session.load_module(Path(module_path).name), device)
    load_s = time.perf_counter() - started
    vm.set_input("main", *[tvm.runtime.tensor(feeds[name], device) for name in info["inputs"]])
    started = time.perf_counter()
    vm.invoke_stateful("main")
    first_run_ms = (time.perf_counter() - started) * 1e3
    for _ in range(max(warmup - 1, 0)):
        vm.invoke_stateful("main")
    samples = []
    while len(samples) < runs:
        count = min(_CHUNK, runs - len(samples))
        timer = vm.time_evaluator("invoke_stateful", device, number=1, repeat=count)
        samples += [float(seconds) for seconds in timer("main").results]
        if bar is not None:
            bar.update(count)
    target = ProfiledModel(f"tvm@{address}", Path(artifact_dir), "tvm", manifest)
    note = "no per-op breakdown over RPC (the VM instrument runs in this process only); profile on the board"
    return Measurement(target, batch, None, load_s, first_run_ms, samples, None, Breakdown(False, note),
                       remote={"address": address, "key": key})
