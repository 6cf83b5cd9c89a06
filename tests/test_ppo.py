import dataclasses
import json
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from ppo_setup import make_assets, tiny_config

from rlr.training.batching import prompt_width
from rlr.training.metrics import read_metrics
from rlr.training.ppo import PPOTrainer
from rlr.training.schemas import EvalSpec, RewardSpec


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("ppo_assets"))


@pytest.fixture(scope="module")
def finished_run(assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("ppo_run")
    trainer = PPOTrainer(tiny_config(assets, out, eval=EvalSpec(every=2)))
    summary = trainer.run()
    return trainer, summary, out


def test_run_writes_metrics_checkpoints_and_samples(finished_run):
    trainer, summary, out = finished_run
    assert summary["end_iteration"] == 2 and not summary["preempted"]
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    for key in (
        "success_rate",
        "reward/success",
        "reward/prm",
        "reward/kl",
        "loss/policy",
        "loss/value",
        "policy/clip_fraction",
        "policy/entropy",
        "value/explained_variance",
        "response_length",
        "steps_per_solution",
        "filler_step_fraction",
        "repeated_step_fraction",
        "tokens_per_second/rollout",
        "time/rollout",
        "time/grading",
        "time/scoring",
        "time/update",
        "eval_greedy/accuracy",
    ):
        assert key in rows[-1], key
    assert int(trainer.state.step) == 4  # 2 iterations x 1 epoch x 2 minibatches
    assert (out / "config.yaml").exists() and (out / "samples.jsonl").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["1", "2"]


def test_prm_clip_delta_reward_is_bounded_by_success(finished_run):
    rows = read_metrics(finished_run[2])
    for row in rows:  # eta = 0.5 clip: every PRM term is <= 0 after telescoping
        assert row["reward/prm"] <= 1e-6


def test_export_loads_back(finished_run, tmp_path):
    from rlr.models import load_pretrained

    trainer, _, _ = finished_run
    path = trainer.export_policy(tmp_path / "policy")
    model, params = load_pretrained(path)
    ids = np.asarray([[5, 6, 7]], np.int32)
    want = trainer.models.policy.apply({"params": trainer.state.params["policy"]}, ids)
    np.testing.assert_allclose(model.apply({"params": params}, ids), want, atol=1e-5)
    assert (path / "tokenizer.json").exists()


RUN = textwrap.dedent(
    """
    import os, signal, sys, pathlib
    sys.path.insert(0, sys.argv[1])
    import ppo_setup
    from rlr.training.ppo import PPOTrainer
    root, out, mode = pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), sys.argv[4]
    make = getattr(ppo_setup, sys.argv[5] if len(sys.argv) > 5 else "tiny_config")
    trainer = PPOTrainer(make(root, out, iterations=4))
    original = trainer.iteration
    def iteration(it, grader):
        if mode == "kill" and it == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(it, grader)
        if mode == "term" and it == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return result
    trainer.iteration = iteration
    print(trainer.run())
    """
)


def run_script(assets, out, mode, config="tiny_config"):
    """Runs 4 iterations of ppo_setup.<config> in a fresh process; mode "kill" SIGKILLs it at
    the start of iteration 2, "term" SIGTERMs it after iteration 1."""
    here = str(__import__("pathlib").Path(__file__).parent)
    return subprocess.run(
        [sys.executable, "-c", RUN, here, str(assets), str(out), mode, config],
        capture_output=True,
        text=True,
        timeout=600,
    )


def params_after_run(assets, out_dir):
    """Runs (or resumes) the 4-iteration config in this process; returns the final params."""
    trainer = PPOTrainer(tiny_config(assets, out_dir, iterations=4))
    summary = trainer.run()
    return jax.device_get(trainer.state.params), summary


@pytest.mark.slow_subprocess
def test_sigkill_then_resume_is_bitwise_equal_to_uninterrupted(assets, tmp_path):
    killed = run_script(assets, tmp_path / "resumed", "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed, summary = params_after_run(assets, tmp_path / "resumed")
    # the checkpoint of iteration 2 is written asynchronously: the kill may beat it
    assert summary["start_iteration"] in (1, 2) and summary["end_iteration"] == 4
    straight, summary = params_after_run(assets, tmp_path / "straight")
    assert summary["start_iteration"] == 0
    for x, y in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
        np.testing.assert_array_equal(x, y)
    rows = [json.loads(line) for line in open(tmp_path / "resumed" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # rows past the checkpoint superseded


@pytest.mark.slow_subprocess
def test_sigterm_saves_and_exits_zero(assets, tmp_path):
    proc = run_script(assets, tmp_path / "term", "term")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'preempted': True" in proc.stdout
    steps = sorted(
        int(p.name) for p in (tmp_path / "term" / "checkpoints").iterdir() if p.name.isdigit()
    )
    assert steps[-1] == 2


def test_prm_scores_every_variant_but_only_enters_the_reward_when_asked(assets, tmp_path):
    trainer = PPOTrainer(
        tiny_config(assets, tmp_path, iterations=1, reward=RewardSpec(use_prm=False))
    )
    trainer.run()
    row = read_metrics(tmp_path)[-1]
    assert row["return/prm_raw_sum"] > 0  # the PRM scored the rollouts (diagnostic)
    assert row["reward/prm"] == 0.0  # but gave no reward


def test_a_prm_reward_that_vanishes_is_reported(finished_run, assets, tmp_path, capsys):
    """eta = 0 clips every PRM probability to a reward of 0: the run says so, once."""
    for row in read_metrics(finished_run[2]):  # eta = 0.5: the flag follows the fraction
        assert row["warning/prm_rewards_all_zero"] == float(row["reward/prm_nonzero_fraction"] == 0)
    reward = RewardSpec(use_prm=True, method="clip_delta", eta=0.0, max_steps=8)
    PPOTrainer(tiny_config(assets, tmp_path, iterations=2, reward=reward)).run()
    rows = read_metrics(tmp_path)
    assert [r["reward/prm_nonzero_fraction"] for r in rows] == [0.0, 0.0]
    assert [r["warning/prm_rewards_all_zero"] for r in rows] == [1.0, 1.0]
    assert capsys.readouterr().out.count("every shaped PRM step reward is 0") == 1


def test_old_logprobs_from_the_rollout_equal_a_recomputed_pass(assets, tmp_path):
    from rlr.grading import Grader
    from rlr.readouts import policy_readout
    from rlr.training.schemas import PPOSpec

    trainer = PPOTrainer(tiny_config(assets, tmp_path, ppo=PPOSpec(old_logprobs="rollout")))
    with Grader(num_workers=1, timeout_s=5.0) as grader:
        rollout, _ = trainer.rollout(0, grader)
    T = rollout.response_mask.shape[1]
    policy, params = trainer.setup.models.policy, trainer.state.params["policy"]
    recomputed = policy_readout(
        policy, params, rollout.input_ids, rollout.attention_mask, T=T
    ).logprobs
    mask = np.asarray(rollout.response_mask)
    assert mask.sum() > 0
    np.testing.assert_allclose(rollout.sampled_logp, recomputed * mask, atol=2e-4)
    # and the scores take them as they are
    scored = trainer.setup.score(trainer.state.params, trainer.frozen, rollout, None)
    np.testing.assert_array_equal(scored.old_logp, rollout.sampled_logp)


def _variant_configs(assets, out):
    from rlr.reproduce.schemas import DEFAULT_VARIANTS, REWARD_VARIANTS
    from rlr.training.schemas import ModelSpec, PPOSpec

    both = dict(orm=ModelSpec(path=str(assets / "orm")))
    for name in DEFAULT_VARIANTS:  # the process designs hold the same networks
        overrides = REWARD_VARIANTS[name]
        reward = RewardSpec(
            use_prm=overrides["reward.use_prm"],
            use_orm=overrides.get("reward.use_orm", False),
            method=overrides.get("reward.method", "clip_delta"),
            eta=0.5,
            max_steps=8,
        )
        yield name, tiny_config(assets, out / name, reward=reward, **both)
    yield "no_prm_orm", tiny_config(assets, out / "bare", prm=None, reward=RewardSpec())
    yield "grpo", tiny_config(assets, out / "grpo", algorithm="grpo", **both)
    yield "critic_from_prm", tiny_config(assets, out / "c", ppo=PPOSpec(critic_init="prm"))


def test_plan_counts_the_parameters_the_trainer_holds(assets, tmp_path):
    from rlr.plan import plan_shapes
    from rlr.training.loading import count_params

    for name, config in _variant_configs(assets, tmp_path):
        trainer = PPOTrainer(config)
        held = {**trainer.state.params, **trainer.frozen}
        want = {network: count_params(tree) for network, tree in held.items()}
        assert plan_shapes(config, {"data": 1, "fsdp": 1, "tensor": 1})["parameters"] == want, name
        assert ("prm" in want) == (config.prm is not None) and ("orm" in want) == (
            config.orm is not None
        ), name
        assert ("critic" in want) == (config.algorithm == "ppo"), name


SHARDED_BUILD = textwrap.dedent(
    """
    import os, sys, pathlib
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"  # after the suite's
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, sys.argv[1])
    import jax, numpy as np
    from jax.sharding import PartitionSpec
    from ppo_setup import tiny_config
    from rlr import sharding
    from rlr.training.loading import load_tokenizer
    from rlr.training.ppo_build import build_ppo

    root, out = pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
    config = tiny_config(root, out)
    mesh = sharding.make_mesh(data=1, fsdp=4, tensor=2)
    setup = build_ppo(config, mesh=mesh, tokenizer=load_tokenizer(config.tokenizer))
    gate = lambda p: p["model"]["layers"]["mlp"]["gate_proj"]["kernel"]  # [L, D, F]
    params, frozen = setup.state.params, setup.frozen
    for name, tree in [("policy", params["policy"]), ("critic", params["critic"]),
                       ("reference", frozen["reference"]), ("prm", frozen["prm"])]:
        kernel = gate(tree)
        spec = kernel.sharding.spec
        assert spec == PartitionSpec(None, "fsdp", "tensor"), (name, kernel.sharding)
        shard = kernel.addressable_shards[0].data.shape
        want = (kernel.shape[0], kernel.shape[1] // 4, kernel.shape[2] // 2)
        assert shard == want, (name, shard)
    # the reference and the critic's trunk are copies of the policy, in their own buffers
    for other in (frozen["reference"], params["critic"]):
        a, b = gate(params["policy"]), gate(other)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.addressable_shards[0].data.unsafe_buffer_pointer() != (
            b.addressable_shards[0].data.unsafe_buffer_pointer())
    assert not np.any(np.asarray(params["critic"]["score"]["kernel"]))  # V = 0 at the start
    mu = setup.state.opt_state["policy"][1][0].mu
    assert gate(mu).sharding.spec == PartitionSpec(None, "fsdp", "tensor")  # Adam follows params
    print("ok")
    """
)


@pytest.mark.sharding
def test_a_real_build_puts_every_network_straight_into_its_shards(assets, tmp_path):
    here = str(__import__("pathlib").Path(__file__).parent)
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED_BUILD, here, str(assets), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ok" in proc.stdout


def test_grpo_trains_checkpoints_and_resumes_without_a_critic(assets, tmp_path):
    config = tiny_config(assets, tmp_path, algorithm="grpo", iterations=1)
    # eta = 1 puts every step's clipped PRM reward (r - eta, r < 1) below 0: the random PRM
    # gives each sample its own return, so the group advantages are never all 0
    config = dataclasses.replace(config, reward=dataclasses.replace(config.reward, eta=1.0))
    trainer = PPOTrainer(config)
    assert set(trainer.state.params) == {"policy"} and trainer.models.critic is None
    before = jax.device_get(trainer.state.params["policy"])
    trainer.run()
    row = read_metrics(tmp_path)[-1]
    assert row["loss/kl"] >= 0 and "loss/value" not in row and "value/mean" not in row
    assert 0 <= row["policy/clip_fraction"] <= 1
    after = jax.device_get(trainer.state.params["policy"])
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), before, after))
    assert max(moved) > 0, "the GRPO update left the policy unchanged"
    resumed = PPOTrainer(dataclasses.replace(config, iterations=2))
    summary = resumed.run()
    assert summary["start_iteration"] == 1 and summary["end_iteration"] == 2
    assert set(resumed.state.params) == {"policy"}


def test_value_norm_statistics_are_checkpointed_and_resume_exactly(assets, tmp_path):
    from rlr.training.schemas import PPOSpec

    ppo = PPOSpec(
        minibatches=2,
        policy_lr=1e-3,
        critic_lr=1e-3,
        truncation="zero_and_bootstrap",
        value_norm=True,
        value_norm_beta=0.9,
        early_stop_ratio=10.0,
        dual_clip=3.0,
    )
    straight = PPOTrainer(tiny_config(assets, tmp_path / "straight", ppo=ppo))
    straight.run()
    row = read_metrics(tmp_path / "straight")[-1]
    assert row["value_norm/std"] > 0 and row["policy/early_stopped"] == 0
    assert "policy/dual_clip_fraction" in row
    first = PPOTrainer(tiny_config(assets, tmp_path / "resumed", ppo=ppo, iterations=1))
    first.run()
    assert float(first.value_stats.debias) == pytest.approx(0.1)  # one EMA step, 1 - beta
    resumed = PPOTrainer(tiny_config(assets, tmp_path / "resumed", ppo=ppo))
    summary = resumed.run()
    assert summary["start_iteration"] == 1 and summary["end_iteration"] == 2
    for x, y in zip(jax.tree.leaves(resumed.value_stats), jax.tree.leaves(straight.value_stats)):
        np.testing.assert_array_equal(x, y)
    assert float(resumed.value_stats.debias) == pytest.approx(0.19)
    params = zip(jax.tree.leaves(resumed.state.params), jax.tree.leaves(straight.state.params))
    for x, y in params:
        np.testing.assert_array_equal(x, y)


def test_grpo_with_prof_filter_and_pure_softmin_runs(assets, tmp_path):
    from rlr.training.schemas import RolloutSpec

    # PROF: 2 of each prompt's 4 samples dropped, the PRM only ranking (use_prm false)
    rollout = RolloutSpec(
        prompts_per_iteration=2, samples_per_prompt=4, max_prompt_tokens=64, max_new_tokens=24
    )
    prof = RewardSpec(use_prm=False, prof_remove=2, max_steps=8)
    config = tiny_config(assets, tmp_path / "prof", algorithm="grpo", iterations=1,
                         rollout=rollout, reward=prof)  # fmt: skip
    summary = PPOTrainer(config).run()
    assert summary["end_iteration"] == 1
    row = read_metrics(tmp_path / "prof")[-1]
    assert row["prof/dropped_rows"] == 4 and 0 <= row["prof/kept_success_rate"] <= 1
    assert np.isfinite(row["loss/policy"])
    # PURE's softmin step rewards, without a critic
    softmin = RewardSpec(use_prm=True, method="pure_softmin", max_steps=8)
    config = tiny_config(assets, tmp_path / "softmin", algorithm="grpo", iterations=1,
                         reward=softmin)  # fmt: skip
    assert PPOTrainer(config).run()["end_iteration"] == 1
    row = read_metrics(tmp_path / "softmin")[-1]
    assert np.isfinite(row["reward/prm"]) and "prof/dropped_rows" not in row


class ScriptedGrader:
    """Grades round k of a rollout (one grade_responses call per round: no chunks) with
    script[k], whatever the texts say."""

    def __init__(self, script):
        self.script, self.calls = script, 0

    def grade_responses(self, texts, answers):
        grades = self.script[self.calls % len(self.script)]
        self.calls += 1
        assert len(grades) == len(texts)
        return grades


def test_trimmed_prompts_sample_and_score_as_prompts_padded_to_the_limit(assets, tmp_path):
    """rollout.trim_prompts pads an iteration's prompts to the power-of-two width of the
    longest (128: the toy prompts are 62-153 tokens) instead of max_prompt_tokens (256):
    the same prompt tokens, sampled tokens, log-probs, values and PRM scores."""
    base = tiny_config(assets, tmp_path)
    config = dataclasses.replace(
        base, rollout=dataclasses.replace(base.rollout, max_prompt_tokens=256)
    )
    trainer = PPOTrainer(config)
    runs = {}
    for trim in (True, False):
        rollout = dataclasses.replace(config.rollout, trim_prompts=trim)
        trainer.config = dataclasses.replace(config, rollout=rollout)
        batch, info = trainer.rollout(0, ScriptedGrader([[1.0, 0.0, 0.0, 1.0]]))
        scored = trainer.setup.score(trainer.state.params, trainer.frozen, batch, None)
        runs[trim] = jax.device_get((batch, info["prompt_width"], scored))
    (short, width, scored), (wide, wide_width, wide_scored) = runs[True], runs[False]
    assert (width, wide_width) == (128, 256)
    assert short.input_ids.shape[1] == 128 + config.rollout.max_new_tokens
    cut = int(wide_width - width)  # columns that only the padded rollout has: padding everywhere
    assert not wide.attention_mask[:, :cut].any()
    np.testing.assert_array_equal(wide.input_ids[:, cut:], short.input_ids)
    np.testing.assert_array_equal(wide.attention_mask[:, cut:], short.attention_mask)
    np.testing.assert_array_equal(wide.response_mask, short.response_mask)
    np.testing.assert_array_equal(wide.step_end, short.step_end)
    assert short.response_mask.sum() > 0
    for name, a, b in zip(scored._fields, scored, wide_scored):
        if a is not None:
            np.testing.assert_allclose(a, b, atol=2e-5, err_msg=name)


def test_dynamic_sampling_drops_uniform_groups_and_pads_at_the_cap(assets, tmp_path):
    # 2 prompts x 2 samples, at most 2 rounds. Round 0: both groups all-equal (dropped);
    # round 1: group 0 informative, group 1 all wrong: one group kept, one slot padded.
    config = tiny_config(
        assets,
        tmp_path,
        algorithm="grpo",
        iterations=1,
        reward=RewardSpec(max_steps=8),
        rollout=dataclasses.replace(
            tiny_config(assets, tmp_path).rollout,
            dynamic_sampling=True,
            max_sampling_rounds=2,
            max_prompt_tokens=256,  # trimmed (rollout.trim_prompts) to both rounds' width
        ),
    )
    trainer = PPOTrainer(config)
    script = [[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]]
    rollout, info = trainer.rollout(0, ScriptedGrader(script))
    assert info["dynamic_sampling/rounds"] == 2
    assert info["dynamic_sampling/groups_dropped"] == 3
    assert info["dynamic_sampling/groups_padded"] == 1
    assert info["success_rate"] == 0.5  # the first round's
    # the kept group is round 1's group 0, then the earliest dropped group, masked out
    key = jax.random.fold_in(jax.random.key(config.seed), 0)
    both = [trainer.prompt_text(p) for p in trainer.prompts_for(0) + trainer.extra_prompts(0, 1)]
    width = prompt_width(trainer.tokenizer, both)
    assert trainer.prompt_width_for(0) == width == info["prompt_width"] < 256
    assert rollout.input_ids.shape[1] == width + config.rollout.max_new_tokens
    round1, _, _ = trainer._sample(
        trainer.extra_prompts(0, 1),
        jax.random.fold_in(key, 2**20 + 1),
        ScriptedGrader(script[1:]),
        width,
    )
    round0, _, _ = trainer._sample(trainer.prompts_for(0), key, ScriptedGrader(script), width)
    ids = np.asarray(rollout.input_ids)
    np.testing.assert_array_equal(ids[:2], np.asarray(round1.input_ids)[:2])
    np.testing.assert_array_equal(ids[2:], np.asarray(round0.input_ids)[:2])
    np.testing.assert_array_equal(np.asarray(rollout.success), [1.0, 0.0, 0.0, 0.0])
    mask = np.asarray(rollout.response_mask)
    assert mask[:2].sum() > 0 and mask[2:].sum() == 0
    np.testing.assert_array_equal(np.asarray(rollout.step_mask)[2:], 0.0)
    # the same (seed, iteration) draws the same batch (exact resume)
    again, _ = trainer.rollout(0, ScriptedGrader(script))
    for name in ("input_ids", "response_mask", "success"):
        np.testing.assert_array_equal(np.asarray(getattr(again, name)), getattr(rollout, name))
    # the padded group gets no advantage; the kept one does
    scored = trainer.setup.score(trainer.state.params, trainer.frozen, rollout, None)
    experience, _ = trainer.setup.experience(rollout, scored)
    advantages = np.asarray(experience.advantages)
    assert np.all(advantages[2:] == 0) and np.abs(advantages[:2]).sum() > 0
    metrics = trainer.iteration(0, ScriptedGrader([[1.0, 0.0, 0.0, 1.0]]))
    assert metrics["dynamic_sampling/rounds"] == 1
    assert metrics["dynamic_sampling/groups_dropped"] == 0
    assert np.isfinite(metrics["loss/total"])


def test_continuous_batching_and_packed_updates_run_the_same_iterations(
    finished_run, assets, tmp_path
):
    """rollout.decode_slots (continuous batching) samples the same tokens and ppo.pack
    (packed minibatches) makes the same updates: the run's metrics and final parameters
    equal the plain run's, up to float rounding."""
    from rlr.training.schemas import PPOSpec, RolloutSpec

    trainer, _, out = finished_run
    base = tiny_config(assets, tmp_path)
    config = dataclasses.replace(
        base,
        eval=EvalSpec(every=2, max_examples=4),
        rollout=dataclasses.replace(base.rollout, decode_slots=2),
        ppo=dataclasses.replace(base.ppo, pack=True),
    )
    fast = PPOTrainer(config)
    assert type(fast.sampler).__name__ == "ContinuousSampler"
    fast.run()
    for plain, other in zip(read_metrics(out), read_metrics(tmp_path), strict=True):
        assert other["reward/success"] == plain["reward/success"]
        assert other.get("eval/accuracy") == plain.get("eval/accuracy")
        np.testing.assert_allclose(other["loss/total"], plain["loss/total"], rtol=1e-4)
        assert other["update/packing_ratio"] >= 1 and "update/packing_ratio" not in plain
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4),
        jax.device_get(fast.state.params),
        jax.device_get(trainer.state.params),
    )
    with pytest.raises(ValueError, match="remove compact_rows"):
        RolloutSpec(decode_slots=2, compact_rows=True)
    with pytest.raises(ValueError, match=r"decode_slots must be in \[1, 32\]"):
        RolloutSpec(decode_slots=33)
    assert not PPOSpec().pack
