"""Density advice of `lbdeploy inspect`: measured TernaryConv speed per density next to the paper's Table 2."""

import json

import pytest
from click.testing import CliRunner

from lbdeploy.cli import main
from lbdeploy.density_advice import PAPER_TABLE2, RESULTS_FILE, density_advice, format_advice, load_results

RESULTS = {
    "machine": {"cpu": "Test CPU", "threads": 2, "onnxruntime": "1.0", "date": "2026-01-01 00:00 UTC"},
    "kernel": {"shape": "128->128, 3x3, 64x64, batch 1",
               "repeats": 50,
               "ratios": [{"density": 0.5, "ratio": 0.5, "ratio_of_mins": 0.45}, {"density": 0.1, "ratio": 0.15},
                          {"density": 0.9, "ratio": 0.8, "ratio_of_mins": 0.7}]},
    "e2e": [{"comparison": "LBRN-S8 d=0.5 ORT vs SHN fp32", "ratio": 0.6}],
}


def test_paper_table2_is_flat_in_density():
    assert set(PAPER_TABLE2) == {round(0.1 * i, 1) for i in range(1, 10)}
    assert max(PAPER_TABLE2.values()) - min(PAPER_TABLE2.values()) <= 0.5  # the paper: margin < 0.5%


def test_advice_combines_measured_speed_with_paper_accuracy():
    advice = density_advice(0.45, RESULTS)
    assert [r["density"] for r in advice["rows"]] == [0.1, 0.5, 0.9]  # sorted
    assert [r["pckh_paper"] for r in advice["rows"]] == [87.2, 87.1, 87.2]
    assert advice["best"] == {"density": 0.1, "time_ratio": 0.15}
    assert advice["model"] == {"density": 0.5, "time_ratio": 0.45}  # nearest measured density
    text = "\n".join(format_advice(advice))
    assert advice["rows"][1]["median_ratio"] == 0.5  # fastest-run ratio shown, median kept
    assert "Test CPU" in text and "fastest of 50 runs" in text and "0.15x" in text and "Table 2" in text and "SHN fp32: 0.60x" in text


def test_advice_without_measurements_says_how_to_measure():
    advice = density_advice(0.5, None)
    assert advice["measured_on"] is None and len(advice["rows"]) == 9
    assert "--save-advice" in format_advice(advice)[-1]


def test_load_results_reads_a_file_and_rejects_junk(tmp_path):
    good, junk = tmp_path / "good.json", tmp_path / "junk.json"
    good.write_text(json.dumps(RESULTS))
    junk.write_text("{not json")
    assert load_results(good)["kernel"]["ratios"][0]["density"] == 0.5
    assert load_results(junk) is None and load_results(tmp_path / "missing.json") is None


def test_shipped_results_file_is_valid():
    if not RESULTS_FILE.exists():
        pytest.skip(f"{RESULTS_FILE} is not generated yet (bench/run.py --only kernel --save-advice)")
    results = load_results()
    assert results is not None and all(0 < r["ratio"] for r in results["kernel"]["ratios"])


@pytest.mark.parametrize("arch,has_advice", [("lbrn-s", True), ("shn", False)])
def test_inspect_shows_density_advice_for_ternary_models(tmp_path, arch, has_advice):
    runner = CliRunner()
    path = tmp_path / "m.pt"
    created = runner.invoke(main, ["create", arch, "--stacks", "1", "--input-size", "64x64", "-o", str(path)])
    assert created.exit_code == 0, created.output
    data = json.loads(runner.invoke(main, ["inspect", str(path), "--json", "--no-layers"]).output)
    table = runner.invoke(main, ["inspect", str(path), "--no-layers"]).output
    if has_advice:
        assert data["density_advice"]["model_density"] == pytest.approx(0.5, abs=0.02)
        assert "density advice" in table and "PCKh@0.5 (paper)" in table
    else:
        assert data["density_advice"] is None and "density advice" not in table
