"""Every layer spells the op as its spec does: name, domain, activations and attribute defaults.

The spec is lbdeploy/ops/ternary_conv.py. The C++ (ONNX Runtime wrapper, kernel core), the
TensorRT plugin and the TVM importer restate some of it in their own language; these tests read
their sources and fail when one drifts from the spec.
"""

import dataclasses
import re
from pathlib import Path

import pytest

from lbdeploy.ops.ternary_conv import ACTIVATIONS, DOMAIN, OP_TYPE, OP_VERSION, PLUGIN_VERSION, TernaryConvAttrs

KERNELS = Path(__file__).resolve().parents[1] / "lbdeploy" / "kernels"
IMPORTER = Path(__file__).resolve().parents[1] / "exporters" / "tvm" / "importer.py"
DEFAULTS = {f.name: f.default for f in dataclasses.fields(TernaryConvAttrs)
            if f.default is not dataclasses.MISSING and f.name != "activation"}


def _text(relative: str) -> str:
    return (KERNELS / relative).read_text()


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"-?\d+", text))


def test_ort_wrapper_registers_the_spec_name_and_domain():
    source = _text("ort/ternary_conv_op.cc")
    assert re.search(rf'kDomain = "{re.escape(DOMAIN)}"', source)
    assert re.search(rf'kOpType = "{OP_TYPE}"', source)
    assert f"{DOMAIN}::{OP_TYPE} (version {OP_VERSION})" in source


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_ort_wrapper_attribute_defaults_match_the_spec(name):
    source = _text("ort/op_common.h")  # the conv attributes both ORT ops read
    match = re.search(rf'(?:ints|int)_attribute\(api, info, "{name}", ([^)]*)\)', source)
    assert match, f"the ORT wrapper does not read attribute {name}"
    expected = DEFAULTS[name]
    assert _ints(match.group(1)) == (tuple(expected) if isinstance(expected, tuple) else (expected,))


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_tensorrt_plugin_attribute_defaults_match_the_spec(name):
    header = _text("tensorrt/ternary_conv_plugin.h")
    field = {"group": "group", "strides": "strides", "pads": "pads", "dilations": "dilations"}[name]
    match = re.search(rf"\b{field}\{{([^}}]*)\}}", header)
    assert match, f"the TensorRT plugin has no default for {name}"
    expected = DEFAULTS[name]
    assert _ints(match.group(1)) == (tuple(expected) if isinstance(expected, tuple) else (expected,))


def test_tensorrt_plugin_name_domain_and_version_match_the_spec():
    header = _text("tensorrt/ternary_conv_plugin.h")
    assert f'kPluginName = "{OP_TYPE}"' in header
    assert f'kDomainNamespace = "{DOMAIN}"' in header
    assert f'version "{PLUGIN_VERSION}"' in header


def test_every_layer_knows_the_same_activations():
    plugin = re.search(r"kActivationNames\[\] = \{([^}]*)\}", _text("tensorrt/ternary_conv_plugin.cpp")).group(1)
    assert tuple(re.findall(r'"(\w+)"', plugin)) == ACTIVATIONS
    core = re.findall(r'if \(name == "(\w+)"\) return Activation', _text("core/ternary_conv.cc"))
    assert tuple(core) == ACTIVATIONS


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_tvm_importer_attribute_defaults_match_the_spec(name):
    source = IMPORTER.read_text()
    if name == "group":
        match = re.search(r'attrs\.get\("group", (\d+)\)', source)
    else:
        match = re.search(rf'attrs\.get\("{name}", \(([^)]*)\)\)', source)
    assert match, f"the TVM importer does not read attribute {name}"
    expected = DEFAULTS[name]
    assert _ints(match.group(1)) == (tuple(expected) if isinstance(expected, tuple) else (expected,))


def test_tvm_importer_takes_the_op_identity_from_the_spec():
    source = IMPORTER.read_text()
    assert "from lbdeploy.ops.ternary_conv import DOMAIN, OP_TYPE" in source
    assert f'"{OP_TYPE}"' not in source and f'"{DOMAIN}"' not in source


def test_quantized_op_name_matches_its_spec():
    from lbdeploy.ops import qternary_conv

    source = _text("ort/qternary_conv_op.cc")
    assert re.search(rf'kOpType = "{qternary_conv.OP_TYPE}"', source)
    assert f'kDomain = "{DOMAIN}"' in _text("ort/ternary_conv_op.cc")  # one domain registers both ops
    assert f'"{DOMAIN}"' not in source
