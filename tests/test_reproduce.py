"""`rlr reproduce`: the smoke preset end to end (from a plain install), caching, the results
table and its error bars, and clear errors."""

import json
import shutil

import pytest
from smoke_run import installed_rlr, smoke_results

from rlr.config import ConfigError
from rlr.reproduce import PAPER_TABLE, VARIANTS, Reproduction, StagePreempted, results_markdown
from rlr.training.configs import GROUP_ONLY_VARIANTS

PPO_VARIANTS = [v for v in VARIANTS if v not in GROUP_ONLY_VARIANTS]


@pytest.fixture(scope="module")
def out():
    return smoke_results()


def test_smoke_preset_writes_results_for_every_variant(out):
    results = json.loads((out / "results.json").read_text())
    assert set(results["variants"]) == set(PPO_VARIANTS)  # a critic skips the group-only ones
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
    for name in PPO_VARIANTS:
        assert f"| {name} |" in table
    assert f"{PAPER_TABLE['prm_raw'][0]:.2f}" in table
    assert (out / "curves.png").stat().st_size > 10_000
    for name in PPO_VARIANTS:
        rows = [json.loads(x) for x in open(out / "ppo" / name / "metrics.jsonl")]
        assert "return/prm_raw_sum" in rows[-1]  # the PRM scores every variant


def test_smoke_preset_runs_every_variant_under_grpo_too(out):
    results = json.loads((out / "results_grpo.json").read_text())
    assert results["algorithm"] == "grpo" and set(results["variants"]) == set(VARIANTS)
    assert results["sft"] == json.loads((out / "results.json").read_text())["sft"]
    assert "algorithm grpo" in (out / "results_grpo.md").read_text()
    assert (out / "curves_grpo.png").stat().st_size > 10_000
    for name in VARIANTS:
        rows = [json.loads(x) for x in open(out / "grpo" / name / "metrics.jsonl")]
        assert "loss/kl" in rows[-1] and "loss/value" not in rows[-1]
        config = (out / "grpo" / name / "config.yaml").read_text()
        assert "algorithm: grpo" in config


def test_smoke_ran_from_the_installed_package_in_another_folder(out):
    log = (out.parent / "log.txt").read_text()
    assert f"rlr imported from {installed_rlr() / 'rlr' / '__init__.py'}" in log
    assert (installed_rlr() / "rlr" / "configs" / "reproduce_smoke.yaml").is_file()


def test_stages_are_the_commands_a_user_would_run(out):
    lines = (out / "commands.sh").read_text().splitlines()
    commands = [line.split()[1] for line in lines if line.startswith("rlr ")]
    assert commands[:5] == ["make-data", "train-tokenizer", "sft", "train-prm", "train-orm"]
    assert commands.count("ppo") == len(PPO_VARIANTS) + len(VARIANTS)  # under ppo and grpo
    assert sum("algorithm=grpo" in line for line in lines) == len(VARIANTS)
    assert any("--config sft_cpu" in line and "train.steps=30" in line for line in lines)


def test_rerun_uses_the_cached_stages(out, tmp_path):
    copy = tmp_path / "reproduce"  # a copy: other workers may be reading the shared run
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("jax_cache"))
    results = Reproduction.from_preset("smoke", f"out_dir={copy}").run()
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
        Reproduction.from_preset("gpu")
    with pytest.raises(ConfigError, match="unknown variant 'prm_rwa'"):
        Reproduction.from_preset("smoke", "variants=[prm_rwa]")
    with pytest.raises(ConfigError, match="seeds must be >= 1"):
        Reproduction.from_preset("smoke", "seeds=0")
    with pytest.raises(ConfigError, match="ppo.overrides sets reward.method, which every"):
        Reproduction.from_preset("smoke", "ppo.overrides={reward.method: raw}")
    with pytest.raises(ConfigError, match="unknown key 'stesp'"):  # a late stage, checked first
        Reproduction.from_preset("smoke", "ppo.overrides={ppo.stesp: 1}").validate()


def test_a_stage_is_cached_only_when_it_finished_with_the_same_command(tmp_path):
    reproduction = Reproduction.from_preset("smoke", f"out_dir={tmp_path}")
    stage = tmp_path / "stage"
    assert reproduction.stage(stage, ["a", "1"], action=lambda: {"x": 1.0})["x"] == 1.0
    assert reproduction.stage(stage, ["a", "1"], action=lambda: {"x": 2.0})["x"] == 1.0
    with pytest.raises(ValueError, match="was made by `a 1`, not `a 2`: delete it"):
        reproduction.stage(stage, ["a", "2"], action=lambda: {"x": 3.0})
    other = tmp_path / "stopped"
    with pytest.raises(StagePreempted, match="stopped early"):
        reproduction.stage(other, ["b"], action=lambda: {"interrupted": True})
    with pytest.raises(StagePreempted, match="did not write"):
        reproduction.stage(other, ["b"], produces=other / "model", action=lambda: {})
    assert not (other / "DONE").exists()  # a rerun runs the stage again
