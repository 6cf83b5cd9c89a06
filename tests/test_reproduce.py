import json
import subprocess
import sys

import pytest
from smoke_run import smoke_results

from rlr.reproduce import PAPER_TABLE, VARIANTS, Reproduction, results_markdown


@pytest.fixture(scope="module")
def out():
    return smoke_results()


def test_smoke_preset_writes_results_for_every_variant(out):
    results = json.loads((out / "results.json").read_text())
    assert set(results["variants"]) == set(VARIANTS)
    for name, entry in [("sft", results["sft"]), *results["variants"].items()]:
        for key in (
            "greedy_accuracy",
            "sampling_accuracy",
            "steps_per_solution",
            "filler_step_fraction",
            "response_length",
        ):
            assert key in entry, (name, key)
        assert 0.0 <= entry["greedy_accuracy"] <= 1.0
        assert entry["steps_per_solution"] > 0
    assert results["wall_time_s"] > 0 and results["seeds"] == [0]
    table = (out / "results.md").read_text()
    for name in VARIANTS:
        assert f"| {name} |" in table
    assert f"{PAPER_TABLE['prm_raw'][0]:.2f}" in table
    assert (out / "curves.png").stat().st_size > 10_000
    for name in VARIANTS:
        rows = [json.loads(x) for x in open(out / "ppo" / name / "metrics.jsonl")]
        assert "return/prm_raw_sum" in rows[-1]  # the PRM scores every variant


def test_rerun_uses_the_cached_stages(out):
    results = Reproduction(out, preset="smoke").run()
    assert results["wall_time_s"] < 60, "a finished reproduction must not train again"


def test_markdown_reports_error_bars_for_several_seeds():
    entry = {
        "greedy_accuracy": 0.5,
        "greedy_accuracy_std": 0.1,
        "sampling_accuracy": 0.4,
        "steps_per_solution": 3.0,
        "filler_step_fraction": 0.1,
        "response_length": 40.0,
    }
    results = {
        "preset": "cpu",
        "seeds": [0, 1],
        "date": "d",
        "wall_time_s": 60.0,
        "sft": entry,
        "variants": {"prm_raw": entry},
        "paper": {k: {"greedy": g, "sampling": s} for k, (g, s) in PAPER_TABLE.items()},
    }
    text = results_markdown(results)
    assert "50.0 ± 10.0" in text and "| prm_raw |" in text


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="preset must be one of"):
        Reproduction(tmp_path, preset="gpu")
    with pytest.raises(ValueError, match="unknown variant 'prm_rwa'"):
        Reproduction(tmp_path, preset="smoke", variants=["prm_rwa"])
    proc = subprocess.run(
        [sys.executable, "-m", "rlr.cli", "reproduce", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "--preset" in proc.stdout
