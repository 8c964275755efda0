"""The analysis reproduces the paper's figures (Eq. 4-9, Table 1) and counts what it claims."""

import pytest

from lbdeploy.analysis import analyze, block_figures
from lbdeploy.models import build_model


def test_hourglass_block_matches_paper():
    fig = block_figures(in_ch=256, mid_ch=128, hw=64)
    assert fig["params_dense"] == 212_992  # Table 1 SHN 0.213 M
    assert fig["params_lbb"] == 65_536  # Table 1 LBRN-S 0.065 M
    assert fig["param_ratio"] == 3.25  # Eq. 6
    assert round(fig["param_reduction_pct"], 1) == 69.2
    assert round(fig["flops_dense"] / 1e9, 1) == 1.7  # Eq. 8
    assert round(fig["flops_lbb"] / 1e9, 1) == 0.5  # Eq. 9
    # the paper's 70.5% comes from the rounded 0.5 / 1.7 GFLOPs (70.59%, truncated)
    assert int(fig["flops_reduction_pct_rounded_gflops"] * 10) / 10 == 70.5


def test_5x5_ratio():
    assert block_figures(kernel_size=5)["param_ratio"] == 7.25


def test_prm_block_params_match_table_1():
    # PRM 0.262 M and LBRN-P 0.078 M trainable conv weights per block (biases and BN excluded)
    for name, expected in (("prm", 262_144), ("lbrn-p", 77_824)):
        model = build_model(name, stacks=1, input_size=(64, 64))
        block = model.res[0][0]
        weights = sum(p.numel() for n, p in block.named_parameters() if n.endswith("weight") and p.dim() == 4)
        assert weights == expected


@pytest.mark.parametrize("dense,lbb", [("shn", "lbrn-s"), ("resnet56", "resnet-lbb-56")])
def test_totals_are_consistent(dense, lbb):
    kwargs = {"stacks": 1} if dense == "shn" else {}
    d, b = analyze(build_model(dense, **kwargs)), analyze(build_model(lbb, **kwargs))
    assert d.fixed_params == 0 and d.ternary_layers == 0
    assert b.ternary_layers > 0 and b.density == pytest.approx(0.5, abs=1e-3)
    # the ternary weights move from trainable to fixed; the real-conv FLOPs shrink by what they cost
    spatial = sum(l.trainable_params - l.out_channels for l in d.layers if l.kernel == (3, 3) and l.name != "conv1")
    assert d.trainable_params - b.trainable_params == spatial + sum(
        l.out_channels for l in d.layers if l.kernel == (3, 3) and l.name != "conv1") - 0
    assert b.fixed_params == spatial
    assert b.flops < d.flops and b.ternary_additions == pytest.approx(
        sum(l.additions for l in b.layers))
    assert b.bytes_packed < b.bytes_fp32


def test_ternary_additions_count_nonzeros_per_pixel():
    a = analyze(build_model("resnet-lbb-56", density=0.1))
    layer = next(l for l in a.layers if l.kind == "ternary")
    assert layer.additions == layer.nonzeros * layer.output_hw[0] * layer.output_hw[1]
    assert layer.bytes_packed == layer.out_channels * -(-layer.in_channels * 9 // 4)
