"""`rlr reproduce`: the smoke preset end to end (from a plain install), caching, the results
table and its error bars, and clear errors."""

import json
import pathlib
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smoke_run import installed_rlr, smoke_results

from rlr.config_loading import ConfigError
from rlr.data.synthetic import FILLER_STEPS
from rlr.reproduce import (
    PAPER_TABLE,
    Reproduction,
    StagePreempted,
    aggregate_seeds,
    gain_over_sft,
    iterations_to_success,
    plot_name,
    results_markdown,
    sweep_name,
    training_success,
)
from rlr.reproduce.schemas import DEFAULT_VARIANTS, GROUP_ONLY_VARIANTS

# the smoke preset lists the default variants (the process designs are opt-in)
VARIANTS = DEFAULT_VARIANTS
PPO_VARIANTS = [v for v in VARIANTS if v not in GROUP_ONLY_VARIANTS]


# What a stubbed run reports: the keys `rlr evaluate` writes and the reports read.
STUB_EVALUATION = {
    "greedy_accuracy": 0.5,
    "sampling_accuracy": 0.4,
    "steps_per_solution": 3.0,
    "filler_step_fraction": 0.0,
    "response_length": 30.0,
    "samples": [],
}


def write_stub_metrics(directory: pathlib.Path) -> None:
    """A 3-iteration metrics.jsonl with the keys the curves and iterations-to-target read."""
    keys = ("success_rate", "steps_per_solution", "return/prm_raw_sum")
    rows = [{"step": i + 1, **dict.fromkeys(keys, 0.5 + 0.1 * i)} for i in range(3)]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")


def stub_training(reproduction: Reproduction) -> dict[str, list[str]]:
    """Stands in for the training commands of `reproduction` (`rlr ppo`, `rlr train-prm` and
    `rlr evaluate` write the files their stages read); the other commands run. Returns the
    argv of each stubbed command by its output folder, relative to the reproduction's."""
    real, ran = reproduction.command, {}

    def command(argv):
        if argv[0] == "evaluate":
            out = pathlib.Path(argv[argv.index("--out") + 1])
            out.write_text(json.dumps(STUB_EVALUATION))
        elif argv[0] in ("ppo", "train-prm"):
            (directory,) = (
                pathlib.Path(a[len("out_dir=") :]) for a in argv if a.startswith("out_dir=")
            )
            ran[str(directory.relative_to(reproduction.out))] = argv
            (directory / "model").mkdir(parents=True, exist_ok=True)
            (directory / "model" / "config.json").write_text("{}")
            (directory / "summary.json").write_text(json.dumps({"preempted": False}))
            if argv[0] == "ppo":
                write_stub_metrics(directory)
        else:
            real(argv)

    reproduction.command = command
    return ran


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
    (curve,) = results["sft_curves"]  # the SFT stage's held-out curve, recorded
    assert curve and curve[-1][1] == pytest.approx(
        json.loads((out / "sft" / "summary.json").read_text())["eval/accuracy"]
    )
    assert "SFT held-out greedy accuracy by step (per seed): " in table
    assert "| iterations to target |" in table
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
    # every policy is evaluated by a command too: the SFT policy and each RL run's export
    assert commands.count("evaluate") == commands.count("ppo") + 1
    assert sum("algorithm=grpo" in line for line in lines if line.startswith("rlr ppo")) == len(
        VARIANTS
    )
    assert any("--config sft_cpu" in line and "train.steps=30" in line for line in lines)


def test_the_evaluation_stage_replays_from_commands_sh(out, tmp_path):
    import shlex

    from rlr import cli

    lines = (out / "commands.sh").read_text().splitlines()
    line = next(x for x in lines if x.startswith("rlr evaluate") and "/sft/model" in x)
    argv = shlex.split(line)[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "again.json")
    assert cli.run(argv) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    cached = json.loads((out / "sft_eval" / "summary.json").read_text())
    assert again["greedy_accuracy"] == cached["greedy_accuracy"]
    assert again["samples"] == cached["samples"]


def test_rerun_uses_the_cached_stages(out, tmp_path):
    copy = tmp_path / "reproduce"  # a copy: other workers may be reading the shared run
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("jax_cache"))
    reproduction = Reproduction.from_preset("smoke", f"out_dir={copy}")
    ran, stage = [], reproduction.stage

    def spied_stage(directory, argv, *, produces=None, action=None):
        def traced_action():
            ran.append(directory)
            return action()

        return stage(
            directory, argv, produces=produces, action=None if action is None else traced_action
        )

    reproduction.command = ran.append  # a stage that runs its command calls this
    reproduction.stage = spied_stage  # and one without a command calls its action
    results = reproduction.run()
    assert ran == [], f"a finished reproduction ran stages again: {ran}"
    assert set(results["variants"]) == set(VARIANTS)


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


@settings(deadline=None, max_examples=30)
@given(
    st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(1, 20)), min_size=1, max_size=5)
)
def test_seed_aggregation_matches_a_loop(rows):
    per_seed = [
        {"greedy_accuracy": g, "sft_like": s, "steps_per_solution": k, "samples": [], "ok": True}
        for g, s, k in rows
    ]
    sft = [{"greedy_accuracy": s} for _, s, _ in rows]
    summary = aggregate_seeds(per_seed)
    n = len(rows)
    for key, column in (("greedy_accuracy", 0), ("steps_per_solution", 2)):
        values = [row[column] for row in rows]
        mean = sum(values) / n
        assert summary[key] == pytest.approx(mean)
        if n > 1:
            var = sum((v - mean) ** 2 for v in values) / (n - 1)
            assert summary[f"{key}_std"] == pytest.approx(var**0.5, abs=1e-9)
        else:
            assert f"{key}_std" not in summary
    assert "samples" not in summary and "ok" not in summary  # numbers only
    assert [run["greedy_accuracy"] for run in summary["per_seed"]] == [r[0] for r in rows]
    gain = gain_over_sft(per_seed, sft)
    diffs = [g - s for g, s, _ in rows]
    assert gain["mean"] == pytest.approx(sum(diffs) / n)
    if n > 1:
        std = float(np.std(diffs, ddof=1))
        assert gain["se"] == pytest.approx(std / n**0.5, abs=1e-9)
        assert gain["beats_sft"] == (gain["mean"] > 2 * gain["se"])
    else:
        assert gain["se"] is None and gain["beats_sft"] is None


def test_iterations_to_success_is_the_first_window_mean_at_the_target(tmp_path):
    success = [0.1, 0.5, 0.9, 0.9, 0.95, 1.0, 1.0]
    for target in (0.1, 0.5, 0.8, 0.95, 0.99):
        for window in (1, 2, 3):
            want = next(
                (
                    i + 1
                    for i in range(len(success))
                    if np.mean(success[max(0, i + 1 - window) : i + 1]) >= target
                ),
                None,
            )
            assert iterations_to_success(success, target=target, window=window) == want
    assert iterations_to_success(success, target=0.9, window=1) == 3
    assert iterations_to_success(success, target=0.9, window=3) == 5  # (0.9+0.9+0.95)/3
    assert iterations_to_success(success, target=1.0, window=5) is None
    with pytest.raises(ValueError, match="window"):
        iterations_to_success(success, target=0.5, window=0)
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"start_iteration": 0}, {"step": 1, "success_rate": 0.25}, {"step": 2}]
    rows.append({"step": 2, "success_rate": 0.5})
    metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert training_success(metrics) == [0.25, 0.5]
    assert training_success(tmp_path / "missing.jsonl") == []


def test_results_and_plot_names():
    assert plot_name("results") == "curves"
    assert plot_name("results_grpo_filler_aware") == "curves_grpo_filler_aware"
    assert plot_name("results_sweep_eta") == "sweep_eta"
    assert plot_name("results_grpo_sweep_alpha") == "sweep_grpo_alpha"
    # A key's last part names its folders unless another PPO key ends the same way.
    assert sweep_name("reward.eta") == "eta"
    assert sweep_name("policy.dtype") == "policy.dtype"


def test_smoke_with_two_seeds_a_sweep_and_the_filler_aware_prm(out, tmp_path):
    """Continues a copy of the session's one-seed smoke run: seed 1 trains its own SFT
    policy and PRM while seed 0's stages are reused; a sweep and the filler-aware PRM run
    beside the main table in the same folder."""
    copy = tmp_path / "reproduce"
    shutil.copytree(out, copy)
    base = [f"out_dir={copy}", "algorithms=[ppo]"]
    two = Reproduction.from_preset("smoke", *base, "seeds=2", "variants=[success,prm_clip]")
    planned = {stage.name for stage in two.plan()}
    assert {"sft_seed1", "prm_seed1", "sft_eval_seed1", "ppo/prm_clip_seed1"} <= planned
    assert "orm" not in planned  # no variant reads an ORM
    results = two.run()
    assert results["seeds"] == [0, 1]
    assert (copy / "sft_seed1" / "model" / "config.json").is_file()
    seed0 = json.loads((out / "results.json").read_text())["variants"]["success"]
    entry = results["variants"]["success"]
    assert entry["per_seed"][0]["greedy_accuracy"] == seed0["greedy_accuracy"]  # reused
    assert "greedy_accuracy_std" in entry and entry["gain_over_sft"]["seeds"] == 2
    sft_seed1 = (copy / "sft_seed1" / "config.yaml").read_text()
    assert "seed: 1" in sft_seed1
    table = (copy / "results.md").read_text()
    assert "± " in table and "| greedy gain over success |" in table
    assert "gain_over_success" in results["variants"]["prm_clip"]
    assert "gain_over_success" not in results["variants"]["success"]
    assert len(entry["iterations_to_target_per_seed"]) == 2

    # The sweep and the filler-aware PRM add no training code: their training and evaluation
    # commands are stubbed, the filler-aware labelling runs.
    sweep = Reproduction.from_preset(
        "smoke", *base, "variants=[prm_clip]", "sweep={key: eta, values: [0.2, 0.8]}"
    )
    ran = stub_training(sweep)
    results = sweep.run()
    assert results["sweep"]["key"] == "reward.eta" and len(results["sweep"]["variants"]) == 2
    assert set(ran) == {"ppo/sweep_eta/0.2/prm_clip", "ppo/sweep_eta/0.8/prm_clip"}
    for value in ("0.2", "0.8"):
        assert f"reward.eta={value}" in ran[f"ppo/sweep_eta/{value}/prm_clip"]
    assert "| prm_clip | 0.8 |" in (copy / "results_sweep_eta.md").read_text()
    assert (copy / "sweep_eta.png").stat().st_size > 10_000

    aware = Reproduction.from_preset(
        "smoke", *base, "variants=[prm_raw]", "prm_labels=filler_aware"
    )
    ran = stub_training(aware)
    results = aware.run()
    assert results["prm_labels"] == "filler_aware"
    assert set(ran) == {"prm_filler_aware", "ppo/filler_aware/prm_raw"}
    assert f"data.train={copy / 'data_filler_aware' / 'prm_train.jsonl'}" in ran["prm_filler_aware"]
    assert f"prm.path={copy / 'prm_filler_aware' / 'model'}" in ran["ppo/filler_aware/prm_raw"]
    labels = [json.loads(line) for line in open(copy / "data_filler_aware" / "prm_train.jsonl")]
    filler = [
        label
        for record in labels
        for step, label in zip(record["steps"], record["labels"])
        if step in FILLER_STEPS
    ]
    assert filler and set(filler) == {-1}
    assert (copy / "results.json").is_file() and (copy / "results_filler_aware.md").is_file()


def test_dapo_and_gspo_run_every_variant_as_grpo_with_their_recipes(tmp_path, monkeypatch, capsys):
    """`--algorithm dapo,gspo`: each run is `rlr ppo algorithm=grpo` with the recipe's
    overrides (DAPO's overlong buffer a fifth of the PPO stage's budget), in OUT/dapo and
    OUT/gspo, reported in results_dapo.md and results_gspo.md. The stages are stubbed: this
    checks the command lines and the reports, not training."""
    import rlr.reproduce.stages as stages
    from rlr import cli
    from rlr.commands import BY_NAME

    monkeypatch.setattr(stages, "enable_compilation_cache", lambda directory: None)
    reproduction = Reproduction.from_preset(
        "smoke", f"out_dir={tmp_path}", "algorithms=[dapo,gspo]", "variants=[success,prm_clip]"
    )
    budget = reproduction.ppo_config("success", 0, "grpo").rollout.max_new_tokens
    assert budget // 5 != 96 // 5  # the smoke budget, not the default's buffer
    ran: dict[str, list[str]] = {}

    def stubbed_stage(directory, argv, *, produces=None, action=None):
        ran[str(directory.relative_to(tmp_path))] = argv
        if argv[0] == "ppo":
            write_stub_metrics(directory)
        return dict(STUB_EVALUATION)

    reproduction.stage = stubbed_stage
    reproduction.run()
    dapo, gspo = ran["dapo/prm_clip"], ran["gspo/prm_clip"]
    assert "algorithm=grpo" in dapo and "algorithm=grpo" in gspo and "name=dapo_prm_clip" in dapo
    assert f"reward.overlong_buffer={budget // 5}" in dapo
    assert "rollout.dynamic_sampling=true" in dapo and "ppo.clip_eps_high=0.28" in dapo
    assert "ppo.importance_ratio=sequence" in gspo and "rollout.dynamic_sampling=true" not in gspo
    assert set(ran) >= {"dapo/success", "gspo/success"} and "ppo/success" not in ran
    config = reproduction.ppo_config("prm_clip", 0, "dapo")
    assert (config.algorithm, config.ppo.clip_eps_low, config.ppo.clip_eps_high) == (
        "grpo",
        0.2,
        0.28,
    )
    assert config.rollout.dynamic_sampling and config.reward.kl_coef == 0.0
    assert config.reward.overlong_buffer == budget // 5 and config.reward.method == "clip"
    assert reproduction.ppo_config("success", 0, "gspo").ppo.importance_ratio == "sequence"
    table = (tmp_path / "results_dapo.md").read_text()
    assert "algorithm dapo" in table and f"`reward.overlong_buffer={budget // 5}`" in table
    assert "| prm_clip |" in table and "`algorithm=grpo`" in table
    assert json.loads((tmp_path / "results_gspo.json").read_text())["recipe"] == {
        "algorithm": "grpo",
        "ppo.importance_ratio": "sequence",
        "ppo.loss_aggregation": "sequence_mean",
        "ppo.clip_eps_low": 3e-4,
        "ppo.clip_eps_high": 4e-4,
        "reward.kl_coef": 0.0,
    }
    assert (tmp_path / "curves_dapo.png").is_file() and not (tmp_path / "results.md").exists()

    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--help"])
    assert "the recipes dapo and gspo" in " ".join(capsys.readouterr().out.split())
    args = cli.build_parser().parse_args(["reproduce", "--preset", "smoke", "--algorithm", "dapo"])
    assert cli.load_run_config(BY_NAME["reproduce"], args).algorithms == ("dapo",)
    args = cli.build_parser().parse_args(["reproduce", "--algorithm", "ppo,dapoo"])
    with pytest.raises(ConfigError, match="algorithms.1.: must be one of .*'dapo', 'gspo'"):
        cli.load_run_config(BY_NAME["reproduce"], args)
    # the critic's adapters of the stage's overrides are unset for a critic-free run
    both = Reproduction.from_preset(
        "smoke", "algorithms=[ppo,dapo]", "ppo.overrides={ppo.critic_lora.rank: 8}"
    )
    assert both.ppo_config("success", 0, "ppo").ppo.critic_lora.rank == 8
    assert both.ppo_config("success", 0, "dapo").ppo.critic_lora is None
    assert "ppo.critic_lora=null" not in reproduction.ppo_arguments("success", 0, "dapo")
    with pytest.raises(ConfigError, match="ppo.overrides sets ppo.clip_eps_high, which the dapo"):
        Reproduction.from_preset(
            "smoke", "algorithms=[ppo,dapo]", "ppo.overrides={ppo.clip_eps_high: 0.3}"
        )
