"""The layout of an int8 network as ONNX Runtime runs it: Transposes and MaxPools of the optimized
graph, LBRN-S (our QTernaryConv) next to SHN (ONNX Runtime's own int8 convs only).

ONNX Runtime runs its uint8 convs and MaxPool channels-last and cancels the Transposes between
them; an NCHW op in between keeps a Transpose on each side and forces its neighbouring MaxPools
back to NCHW (12-24x slower than the channels-last MaxPool, issue 23). The int8 export writes
QTernaryConv channels-last for ONNX Runtime (exporters/quantize.py), so LBRN-S should have no more
Transposes than SHN and no uint8 MaxPool of the default (NCHW) domain.

    .venv/bin/python bench/int8_layout.py                # 2 stacks, 128x128, density 0.5
    .venv/bin/python bench/int8_layout.py --stacks 8 --size 256
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from models import quantize_network
from qkernel import optimized_node_counts


def layout_counts(stacks: int, size: int, density: float, library: str, images: int = 4) -> dict:
    """{network: {"transposes", "nchw_maxpools", "nhwc_maxpools", "qternary"}} of the optimized graphs."""
    from lbdeploy.exporters.calibration import CalibrationOptions, load_calibration

    calibration = load_calibration(CalibrationOptions(images=images), (size, size),
                                   {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}).calibration
    counts = {}
    with tempfile.TemporaryDirectory(prefix="lbdeploy-layout-") as tmp:
        for arch, extra in (("lbrn-s", {"density": density}), ("shn", {})):
            path = quantize_network(arch, Path(tmp) / f"{arch}.onnx", calibration, stacks=stacks, **extra)
            nodes = optimized_node_counts(path.read_bytes(), library)
            counts[arch] = {
                "transposes": sum(n for op, n in nodes.items() if op.endswith(":Transpose")),
                "nchw_maxpools": nodes.get(":MaxPool", 0),
                "nhwc_maxpools": sum(n for op, n in nodes.items() if op.endswith("MaxPool") and op != ":MaxPool"),
                "qternary": nodes.get("ai.lbdeploy:QTernaryConv", 0),
            }
    return counts


def main() -> None:
    from lbdeploy.kernels.build import build_ort_library

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--library", default=None, help="libternary_ort.so to use (default: build for this host)")
    args = parser.parse_args()
    counts = layout_counts(args.stacks, args.size, args.density, args.library or str(build_ort_library()))
    print(f"{args.stacks} stacks, {args.size}x{args.size}, int8, ONNX Runtime's optimized graph")
    for arch, c in counts.items():
        print(f"{arch:7s} Transposes {c['transposes']:4d}  MaxPool NCHW {c['nchw_maxpools']:3d}  "
              f"MaxPool NHWC {c['nhwc_maxpools']:3d}  QTernaryConv {c['qternary']:3d}")
    ok = counts["lbrn-s"]["transposes"] <= counts["shn"]["transposes"] and counts["lbrn-s"]["nchw_maxpools"] == 0
    print("layout target (Transposes <= SHN's, no NCHW uint8 MaxPool):", "met" if ok else "MISSED")


if __name__ == "__main__":
    main()
