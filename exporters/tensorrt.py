"""What a Jetson (TensorRT) artifact carries besides model.onnx: plugin sources, build script, manifest fields.

TensorRT engines are specific to the GPU and TensorRT version they are built on, so an export for
a Jetson does not contain an engine. It contains the TernaryConv plugin's sources and a build
script; on the board the user runs `bash tensorrt/build.sh` (-> tensorrt/libternary_trt.so) and
`lbdeploy build-engine ARTIFACT` (-> tensorrt/model.engine). The ONNX exporter calls
`add_tensorrt_files(dir, target)` after writing model.onnx and merges the returned fragment into
manifest.json.

TensorRT cannot hold uint8 constants (INetworkDefinition::addConstant refuses DataType::kUINT8), so
the packed uint8 W initializers of model.onnx cannot reach the plugin as they are. For TensorRT the
exporter therefore writes tensorrt/model.onnx: the same graph with each TernaryConv W as int32 words
(every packed row padded with zero codes to a multiple of 4 bytes and read little-endian), which the
plugin decodes with the same 2-bit layout. model.onnx itself stays as the op spec says (ORT parity).

Boards are records of the target registry (lbdeploy/targets.py) with TensorRT settings; the
resolved record travels here as it is and `jetson_board` views it, with its TensorRT settings, as
a `JetsonBoard` (the GPU and its SM stay the record's).
"""

from __future__ import annotations

import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import lbdeploy.kernels
from lbdeploy.artifact import MODEL_FILE
from lbdeploy.errors import ExportError
from lbdeploy.ops.ternary_conv import DOMAIN, OP_TYPE, PLUGIN_NAMESPACE, PLUGIN_VERSION, pack_ternary
from lbdeploy.board_os import get_board_os
from lbdeploy.targets import TARGETS, Target

KERNELS_DIR = Path(lbdeploy.kernels.__file__).resolve().parent  # package data: cuda/ and tensorrt/ sources
SOURCE_DIRS = ("cuda", "tensorrt")  # copied to ARTIFACT/tensorrt/src/<name>, keeping their relative includes
SOURCE_SUFFIXES = (".cu", ".cuh", ".cpp", ".h", ".txt", ".sh")
TENSORRT_DIR = "tensorrt"
WORDS_SUFFIX = "_int32_words"
PLUGIN_LIBRARY = "libternary_trt.so"
ENGINE_FILE = "model.engine"
MIN_TENSORRT = "10.3"  # custom ops: IPluginV3 + getCreators plugin libraries; JetPack 6.1 ships 10.3
MIN_TENSORRT_STANDARD_OPS = "8.5"  # standard ops: the name-based tensor API the backend and builder use
HEADERS_CHECKED = "10.14"  # the TensorRT headers the plugin is compile-checked against in CI


@dataclass(frozen=True)
class JetsonBoard:
    """A Jetson target record with its TensorRT settings: the software its newest JetPack ships."""

    target: Target
    jetpack: str
    stock_tensorrt: str

    @property
    def name(self) -> str:
        """The target's `--target` name."""
        return self.target.name

    @property
    def sm(self) -> int:
        """The GPU's compute capability (the record's)."""
        return self.target.gpu.sm

    @property
    def sm_arch(self) -> str:
        """The arch as nvcc spells it, e.g. "sm_87" (the record's)."""
        return self.target.gpu.sm_arch


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def jetson_board(target: Target) -> JetsonBoard:
    """The Jetson board of a resolved target record.

    Raises:
        ExportError: the target has no TensorRT settings.
    """
    if "tensorrt" not in target.backends or target.gpu is None:
        boards = [name for name, t in TARGETS.items() if "tensorrt" in t.backends]
        raise ExportError(f"target {target.name!r} is not a Jetson with TensorRT; choose one of {', '.join(boards)}")
    settings = target.backends["tensorrt"]
    return JetsonBoard(target, settings.jetpack, settings.stock_tensorrt)


def _build_script(board: JetsonBoard) -> str:
    """The artifact's tensorrt/build.sh: builds the plugin for the board's SM into tensorrt/."""
    return f"""#!/usr/bin/env bash
# Build the TernaryConv TensorRT plugin for {board.name} ({board.sm_arch}) on the board itself.
# Needs JetPack {board.jetpack} (TensorRT >= {MIN_TENSORRT}), cmake and nvcc.
# Override the GPU arch with CUDA_ARCH=<SM number> or CUDA_ARCH=native (the board's own GPU).
set -euo pipefail
here=$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)
lib=$(bash "$here/src/tensorrt/build.sh" "${{CUDA_ARCH:-{board.sm}}}" "$here")
echo "built $lib"
echo "next: lbdeploy build-engine $(dirname "$here") --fp16 --trust-plugin"
"""


def _copy_sources(dest: Path) -> list[str]:
    """Copy the kernel and plugin sources into dest/src/; returns their paths relative to the artifact."""
    copied = []
    for name in SOURCE_DIRS:
        src_dir = KERNELS_DIR / name
        files = sorted(p for p in src_dir.iterdir() if p.is_file() and p.suffix in SOURCE_SUFFIXES)
        if not files:
            raise ExportError(f"no plugin sources found in {src_dir}; reinstall lbdeploy (kernels are package data)")
        for path in files:
            target = dest / "src" / name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied.append(target.relative_to(dest.parent).as_posix())
    return copied


def weight_words(w_packed: np.ndarray) -> np.ndarray:
    """Packed uint8 rows [Cout, B] -> int32 words [Cout, ceil(B/4)] holding the same bytes (little-endian).

    Padding bytes are 0 (the zero-weight code), so row o's packed byte j is byte j of the row's words.
    """
    w_packed = np.asarray(w_packed, dtype=np.uint8)
    rows, nbytes = w_packed.shape
    padded = np.zeros((rows, -(-nbytes // 4) * 4), dtype=np.uint8)
    padded[:, :nbytes] = w_packed
    return padded.view(np.dtype("<i4"))


def write_tensorrt_onnx(model_path: Path, dest: Path) -> int:
    """Write a copy of model.onnx whose TernaryConv W initializers are int32 words (see module docstring).

    Args:
        model_path: the exported model.onnx (W packed uint8, or unpacked int8, as initializers).
        dest: where to write the TensorRT variant.
    Returns:
        The number of TernaryConv nodes rewritten.
    Raises:
        ExportError: a TernaryConv whose W is not an initializer (TensorRT needs constant weights).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    converted: dict[str, str] = {}
    nodes = [n for n in graph.node if n.domain == DOMAIN and n.op_type == OP_TYPE]
    for node in nodes:
        name = node.input[1]
        if name not in converted:
            if name not in initializers:
                raise ExportError(
                    f"TernaryConv node {node.name!r} takes W from {name!r}, which is not an initializer; "
                    "TensorRT needs the ternary weights as constants"
                )
            w = numpy_helper.to_array(initializers[name])
            packed = pack_ternary(w) if w.dtype == np.int8 else w
            converted[name] = name + WORDS_SUFFIX
            graph.initializer.append(numpy_helper.from_array(weight_words(packed), converted[name]))
        node.input[1] = converted[name]
    still_used = {i for n in graph.node for i in n.input}
    kept = [init for init in graph.initializer if init.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, str(dest))
    return len(nodes)


def check_tensorrt_target(target: Target, custom_ops: bool = True) -> JetsonBoard:
    """Check, before any export work, that lbdeploy's TensorRT path can serve `target`.

    Args:
        target: the resolved target record (one with TensorRT settings).
        custom_ops: whether the export uses the TernaryConv custom op (needs the IPluginV3 plugin).
    Returns:
        The board's JetsonBoard.
    Raises:
        ExportError: a target without TensorRT, or a board whose stock TensorRT is too old for this export.
    """
    board = jetson_board(target)
    system = get_board_os(target.board_os)
    if system.unsupported:
        raise ExportError(f"{board.name} runs {system.description}. {system.unsupported}")
    needed = MIN_TENSORRT if custom_ops else MIN_TENSORRT_STANDARD_OPS
    if _version(board.stock_tensorrt) < _version(needed):
        standard_ok = _version(board.stock_tensorrt) >= _version(MIN_TENSORRT_STANDARD_OPS)
        advice = f"`lbdeploy export MODEL --target {board.name} --backend ort` (the board's CPU cores)"
        if custom_ops and standard_ok:
            advice = f"`lbdeploy export MODEL --target {board.name} --ops standard` (plain Conv), or {advice}"
        raise ExportError(
            f"{board.name} runs JetPack {board.jetpack} with TensorRT {board.stock_tensorrt}, but lbdeploy's TensorRT "
            f"path needs TensorRT >= {needed} for {'the TernaryConv IPluginV3 plugin' if custom_ops else 'its API'}; "
            f"use {advice}"
        )
    return board


def add_tensorrt_files(artifact_dir: Path, target: Target, *, custom_ops: bool = True) -> dict:
    """Write ARTIFACT/tensorrt/ (plugin sources + build.sh) and return the manifest fragment.

    Args:
        artifact_dir: the artifact folder being written; its model.onnx must already be there.
        target: the resolved target record (jetson-orin, jetson-xavier or jetson-nano of lbdeploy.targets).
        custom_ops: whether model.onnx uses ai.lbdeploy::TernaryConv (else plain Conv, no plugin).
    Returns:
        {"tensorrt": {...}}: board, SM arch, TensorRT range, plugin identity and file names, the
        ONNX file TensorRT parses, the engine path and the commands to run on the board.
    Raises:
        ExportError: see check_tensorrt_target; or model.onnx is not written yet.
    """
    board = check_tensorrt_target(target, custom_ops)
    needed = MIN_TENSORRT if custom_ops else MIN_TENSORRT_STANDARD_OPS
    model = Path(artifact_dir) / MODEL_FILE
    if not model.is_file():
        raise ExportError(f"{model} must be written before the TensorRT files")
    dest = Path(artifact_dir) / TENSORRT_DIR
    dest.mkdir(parents=True, exist_ok=True)
    sources, onnx_file = [], MODEL_FILE
    if custom_ops:
        sources = _copy_sources(dest)
        write_tensorrt_onnx(model, dest / MODEL_FILE)
        onnx_file = f"{TENSORRT_DIR}/{MODEL_FILE}"
        script = dest / "build.sh"
        script.write_text(_build_script(board))
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    steps = [
        f"copy this folder to the {board.name} (JetPack {board.jetpack}, TensorRT >= {needed})",
        *([f"bash {TENSORRT_DIR}/build.sh"] if custom_ops else []),
        "lbdeploy build-engine . --fp16" + (" --trust-plugin" if custom_ops else ""),
        "lbdeploy infer . image.jpg",
    ]
    fragment = {
        "board": board.name,
        "sm_arch": board.sm_arch,
        "cuda_arch": board.sm,
        "jetpack": board.jetpack,
        "tensorrt_range": f">={needed}",
        "tensorrt_headers_checked": HEADERS_CHECKED if custom_ops else None,
        "plugin": (
            {
                "name": OP_TYPE,
                "version": PLUGIN_VERSION,
                "namespace": PLUGIN_NAMESPACE,
                "onnx_domain": DOMAIN,
                "library": f"{TENSORRT_DIR}/{PLUGIN_LIBRARY}",
            }
            if custom_ops
            else None
        ),
        "sources": sources,
        "onnx": onnx_file,
        "weights": "TernaryConv W as int32 words (packed rows padded to 4 bytes)" if custom_ops else None,
        "build_script": f"{TENSORRT_DIR}/build.sh" if custom_ops else None,
        "engine": f"{TENSORRT_DIR}/{ENGINE_FILE}",
        "next_steps": steps,
    }
    return {"tensorrt": fragment}


def next_steps_text(fragment: dict) -> str:
    """Human-readable next steps for a TensorRT artifact, for the exporter to print."""
    lines = ["TensorRT engines are built on the device. Next steps:"]
    lines += [f"  {i}. {step}" for i, step in enumerate(fragment["tensorrt"]["next_steps"], start=1)]
    return "\n".join(lines)
