"""The parity gate catches real export errors (exporters/parity.py, docs/export.md).

Each sabotage below is one plausible exporter bug: one ternary filter with flipped signs, one BN
folded without its running mean, two joints' heatmaps swapped, two stacks' outputs swapped. Each
must fail the gate on the trained demo model and on untrained networks, whose activations are
orders of magnitude larger; the exact export must pass with a wide margin on both.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from lbdeploy.exporters import folding
from lbdeploy.exporters.export import export_model
from lbdeploy.exporters.parity import compare, parity_images, torch_references
from lbdeploy.checkpoint import load_model, save_checkpoint
from lbdeploy.errors import ParityError
from lbdeploy.models import build_model
from lbdeploy.transforms import normalize
from lbdeploy.runtime.backends.ort import OrtBackend

DEMO = Path(__file__).resolve().parent.parent / "lbdeploy" / "data" / "demo.pt"


def _untrained(path: Path, random_bn: bool) -> Path:
    """A fresh 2-stack LBRN-S; with random_bn its BNs hold seeded non-trivial statistics (as after
    any training step), without them every BN is the identity and no fold of it can be wrong."""
    model = build_model("lbrn-s", stacks=2, input_size=(64, 64))
    if random_bn:
        gen = torch.Generator().manual_seed(0)
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            size = bn.num_features
            bn.running_mean.copy_(torch.randn(size, generator=gen) * 0.5)
            bn.running_var.copy_(torch.rand(size, generator=gen) * 2 + 0.2)
            bn.weight.data.copy_(torch.rand(size, generator=gen) + 0.5)
            bn.bias.data.copy_(torch.randn(size, generator=gen) * 0.2)
    return save_checkpoint(path, model)


MODELS = {"demo": lambda tmp: DEMO,
          "untrained": lambda tmp: _untrained(tmp / "untrained.pt", random_bn=False),
          "untrained-random-bn": lambda tmp: _untrained(tmp / "untrained-bn.pt", random_bn=True)}


@dataclass
class Exported:
    """An exact export that passed the gate, with the gate's inputs and PyTorch references."""

    artifact: Path
    manifest: dict
    images: np.ndarray
    references: tuple


@pytest.fixture(scope="module", params=["demo", "untrained"])
def exported(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    model_pt = MODELS[request.param](tmp)
    manifest = export_model(model_pt, tmp / "artifact", target="onnx", kernels="ternary")
    model, ckpt = load_model(model_pt)
    pixels, _ = parity_images(ckpt.metadata["input_size"])
    images = normalize(pixels, {"mean": ckpt.metadata["mean"], "std": ckpt.metadata["std"]})
    names = [o["name"] for o in manifest["outputs"]]
    return Exported(tmp / "artifact", manifest, images, torch_references(model, images, names))


def _gate(exported: Exported, onnx_path: Path, library: str):
    """The gate's verdict on `onnx_path` (in place of the artifact's model), against the cached references.

    The manifest goes without its `files`: the sabotaged model is loaded in place, as the exporter loads what it
    has just written (an artifact's manifest would refuse it as modified)."""
    manifest = {key: value for key, value in exported.manifest.items() if key != "files"}
    backend = OrtBackend(onnx_path.parent, {**manifest, "kernel_library": None}, custom_op_library=library)
    outputs = backend.run({backend.input_names[0]: exported.images})
    return compare(*exported.references, outputs, "pose", "ort", {})


def _sabotaged(artifact: Path, tmp_path: Path, edit) -> Path:
    """A copy of artifact/model.onnx with `edit(graph, initializers_by_name)` applied, in tmp_path."""
    model = onnx.load(artifact / "model.onnx")
    inits = {i.name: i for i in model.graph.initializer}
    edit(model.graph, inits)
    tmp_path.mkdir(exist_ok=True)
    onnx.save(model, tmp_path / "model.onnx")
    return tmp_path / "model.onnx"


def _set(init, array):
    init.CopyFrom(numpy_helper.from_array(array, init.name))


def _flip_filter(position: str):
    """Swap codes +1 <-> -1 in output channel 0 of the first or last TernaryConv."""
    def edit(graph, inits):
        nodes = [n for n in graph.node if n.op_type == "TernaryConv"]
        init = inits[(nodes[0] if position == "first" else nodes[-1]).input[1]]
        packed = numpy_helper.to_array(init).copy()
        row = packed[0]
        packed[0] = ((row & 0x55) << 1) | ((row & 0xAA) >> 1)
        _set(init, packed)
    return edit


def _swap_joints(graph, inits):
    """Swap the heatmaps of joints 0 and 5 (right/left ankle) in the final 1x1 Conv."""
    final = graph.output[-1].name
    node = next(n for n in graph.node if final in n.output)
    for name in node.input[1:]:
        value = numpy_helper.to_array(inits[name]).copy()
        value[[0, 5]] = value[[5, 0]]
        _set(inits[name], value)


def _swap_stacks(graph, inits):
    """Bind each of the two stacks' output names to the other stack's heatmaps."""
    first, last = graph.output[0].name, graph.output[-1].name
    inner = {first: first + "_inner", last: last + "_inner"}
    for node in graph.node:
        node.input[:] = [inner.get(i, i) for i in node.input]
        node.output[:] = [inner.get(o, o) for o in node.output]
    graph.node.extend([onnx.helper.make_node("Identity", [inner[last]], [first]),
                       onnx.helper.make_node("Identity", [inner[first]], [last])])


def test_exact_export_passes_with_margin_on_real_and_random_images(exported, library):
    report = exported.manifest["parity"]
    assert report["passed"] and report["keypoint_agreement"] == 1.0
    assert max(o["worst_ratio"] for o in report["outputs"]) < 0.1
    assert "lbdeploy/data/sample.jpg" in report["inputs"]["images"]
    assert any(kind.startswith("synthetic") for kind in report["inputs"]["images"])
    assert any(kind.startswith("random") for kind in report["inputs"]["images"])
    # the stored report is the gate's result on the artifact as written
    assert _gate(exported, exported.artifact / "model.onnx", library).passed


@pytest.mark.parametrize("sabotage", ["flip-first-filter", "flip-last-filter", "swap-joints", "swap-stacks"])
def test_sabotaged_onnx_fails_the_gate(exported, library, tmp_path, sabotage):
    if sabotage == "swap-stacks" and len(exported.manifest["outputs"]) < 2:
        pytest.skip("a one-stack model has one output")
    edit = {"flip-first-filter": _flip_filter("first"), "flip-last-filter": _flip_filter("last"),
            "swap-joints": _swap_joints, "swap-stacks": _swap_stacks}[sabotage]
    report = _gate(exported, _sabotaged(exported.artifact, tmp_path, edit), library)
    assert not report.passed, report.summary()


@pytest.mark.parametrize("which, call", [("demo", 4), ("untrained-random-bn", 0)])
def test_a_wrong_bn_fold_fails_the_export(tmp_path, monkeypatch, which, call):
    """The real exporter with one BN folded without its running mean: export fails, nothing written."""
    model_pt = MODELS[which](tmp_path)
    calls = []
    right = folding.bn_affine

    def wrong_once(bn):
        scale, shift = right(bn)
        calls.append(bn)
        return (scale, bn.bias.detach().clone()) if len(calls) == call + 1 else (scale, shift)

    monkeypatch.setattr(folding, "bn_affine", wrong_once)
    with pytest.raises(ParityError, match="beyond tolerance"):
        export_model(model_pt, tmp_path / "out", target="onnx")
    assert len(calls) > call and not (tmp_path / "out").exists()


def test_gate_images_are_deterministic_and_real():
    first, kinds = parity_images((64, 48))
    second, _ = parity_images((64, 48))
    assert first.shape == (len(kinds), 64, 48, 3) and first.dtype == np.uint8
    assert np.array_equal(first, second)
    sample = first[kinds.index("lbdeploy/data/sample.jpg")]
    assert sample.std() > 10  # a photo, not a blank


def test_non_finite_output_fails(exported, library, tmp_path):
    """An export that yields NaN somewhere never passes (NaN compares false to every tolerance)."""
    def nan_bias(graph, inits):
        final = graph.output[-1].name
        node = next(n for n in graph.node if final in n.output)
        bias = numpy_helper.to_array(inits[node.input[2]]).copy()
        bias[3] = np.nan
        _set(inits[node.input[2]], bias)

    report = _gate(exported, _sabotaged(exported.artifact, tmp_path, nan_bias), library)
    assert not report.passed and not report.outputs[-1].passed
    json.dumps(report.outputs[-1].worst_ratio)
