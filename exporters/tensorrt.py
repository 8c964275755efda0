"""What a Jetson (TensorRT) artifact carries besides model.onnx: plugin sources, build script, manifest fields.

TensorRT engines are specific to the GPU and TensorRT version they are built on, so an export for
a Jetson does not contain an engine. It contains the TernaryConv plugin's sources and a build
script; on the board the user runs `bash tensorrt/build.sh` (-> tensorrt/libternary_trt.so) and
`lbdeploy build-engine ARTIFACT` (-> tensorrt/model.engine). The lead's ONNX exporter calls
`add_tensorrt_files(dir, target)` and merges the returned fragment into manifest.json.

To add a board: add a `JetsonTarget` to JETSON_TARGETS (its SM number and stock JetPack/TensorRT).
"""

from __future__ import annotations

import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from lbdeploy.errors import ExportError
from lbdeploy.ops.ternary_conv import DOMAIN, OP_TYPE, PLUGIN_NAMESPACE, PLUGIN_VERSION

KERNELS_DIR = Path(__file__).resolve().parent.parent / "lbdeploy" / "kernels"
SOURCE_DIRS = ("cuda", "tensorrt")  # copied to ARTIFACT/tensorrt/src/<name>, keeping their relative includes
SOURCE_SUFFIXES = (".cu", ".cuh", ".cpp", ".h", ".txt", ".sh")
TENSORRT_DIR = "tensorrt"
PLUGIN_LIBRARY = "libternary_trt.so"
ENGINE_FILE = "model.engine"
MIN_TENSORRT = "10.3"  # IPluginV3 + getCreators plugin libraries; JetPack 6.1 ships 10.3
HEADERS_CHECKED = "10.14"  # the TensorRT headers the plugin is compile-checked against in CI


@dataclass(frozen=True)
class JetsonTarget:
    """One Jetson board family: its GPU architecture and the software its newest JetPack ships."""

    name: str
    sm: int
    jetpack: str
    stock_tensorrt: str
    plugin_supported: bool  # whether that JetPack's TensorRT can load an IPluginV3 plugin

    @property
    def sm_arch(self) -> str:
        """The arch as nvcc spells it, e.g. "sm_87"."""
        return f"sm_{self.sm}"


JETSON_TARGETS = {
    "jetson": JetsonTarget("jetson-orin", 87, "6.1+", "10.3", True),
    "jetson-orin": JetsonTarget("jetson-orin", 87, "6.1+", "10.3", True),
    "jetson-xavier": JetsonTarget("jetson-xavier", 72, "5.1", "8.5", False),
    "jetson-nano": JetsonTarget("jetson-nano", 53, "4.6", "8.2", False),
}


def jetson_target(target: str) -> JetsonTarget:
    """Look up a Jetson target name.

    Raises:
        ExportError: the name is not one of JETSON_TARGETS.
    """
    try:
        return JETSON_TARGETS[target]
    except KeyError:
        raise ExportError(
            f"unknown Jetson target {target!r}; choose one of {', '.join(sorted(JETSON_TARGETS))}"
        ) from None


def _build_script(board: JetsonTarget) -> str:
    """The artifact's tensorrt/build.sh: builds the plugin for the board's SM into tensorrt/."""
    return f"""#!/usr/bin/env bash
# Build the TernaryConv TensorRT plugin for {board.name} ({board.sm_arch}) on the board itself.
# Needs JetPack {board.jetpack} (TensorRT >= {MIN_TENSORRT}), cmake and nvcc.
# Override the GPU arch with CUDA_ARCH=native (or another SM number) if needed.
set -euo pipefail
here=$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)
lib=$(bash "$here/src/tensorrt/build.sh" "${{CUDA_ARCH:-{board.sm}}}" "$here")
echo "built $lib"
echo "next: lbdeploy build-engine $(dirname "$here") --fp16"
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


def add_tensorrt_files(artifact_dir: Path, target: str, *, custom_ops: bool = True) -> dict:
    """Write ARTIFACT/tensorrt/ (plugin sources + build.sh) and return the manifest fragment.

    Args:
        artifact_dir: the artifact folder being written (model.onnx sits beside tensorrt/).
        target: a JETSON_TARGETS key ("jetson", "jetson-orin", "jetson-xavier", "jetson-nano").
        custom_ops: whether model.onnx uses ai.lbdeploy::TernaryConv (else plain Conv, no plugin).
    Returns:
        {"tensorrt": {...}}: board, SM arch, TensorRT range, plugin identity and file names, the
        engine path and the commands to run on the board.
    Raises:
        ExportError: unknown target, or a board whose stock TensorRT cannot load the plugin.
    """
    board = jetson_target(target)
    if custom_ops and not board.plugin_supported:
        raise ExportError(
            f"{board.name} runs JetPack {board.jetpack} with TensorRT {board.stock_tensorrt}, which cannot load "
            f"the TernaryConv IPluginV3 plugin (needs TensorRT >= {MIN_TENSORRT}); export with standard ops "
            f"(plain Conv) for this board, or use the ort backend"
        )
    dest = Path(artifact_dir) / TENSORRT_DIR
    dest.mkdir(parents=True, exist_ok=True)
    sources = _copy_sources(dest) if custom_ops else []
    script = dest / "build.sh"
    if custom_ops:
        script.write_text(_build_script(board))
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    steps = [
        f"copy this folder to the {board.name} (JetPack {board.jetpack}, TensorRT >= {MIN_TENSORRT})",
        *([f"bash {TENSORRT_DIR}/build.sh"] if custom_ops else []),
        "lbdeploy build-engine . --fp16",
        "lbdeploy infer . image.jpg",
    ]
    fragment = {
        "board": board.name,
        "sm_arch": board.sm_arch,
        "cuda_arch": board.sm,
        "jetpack": board.jetpack,
        "tensorrt_range": f">={MIN_TENSORRT}",
        "tensorrt_headers_checked": HEADERS_CHECKED,
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
