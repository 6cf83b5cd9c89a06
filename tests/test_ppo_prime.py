"""PRIME's implicit PRM in `rlr ppo` (reward.method=prime): the config checks, its rewards in
build_experience against NumPy loops, a third trained network that starts as the policy, exact
resume after a kill, and the plan."""

from __future__ import annotations

import dataclasses
import functools
import json
import signal

import jax
import numpy as np
import pytest
from ppo_fixtures import B, T, models, params, rollout
from ppo_setup import make_assets, prime_config, tiny_config
from test_ppo import run_script

from rlr.config_loading import ConfigError, load_config
from rlr.training import ppo_core
from rlr.training.metrics import read_metrics
from rlr.training.ppo import PPOTrainer
from rlr.training.schemas import (
    ImplicitPRMSpec,
    LoRASpec,
    PPOConfig,
    RewardSpec,
)

G = 4  # the fixture's 8 rows are 2 prompts x 4 samples
PRIME = RewardSpec(use_prm=True, method="prime", alpha=0.5, kl_coef=0.05)


def test_config_checks_name_the_section_and_say_why():
    with pytest.raises(ConfigError, match="give an `implicit_prm` section"):
        PPOConfig(reward=RewardSpec(use_prm=True, method="prime"))
    with pytest.raises(ConfigError, match="implicit_prm: only reward.method=prime"):
        PPOConfig(
            prm=PPOConfig().policy,
            reward=RewardSpec(use_prm=True, method="clip_delta", eta=0.5),
            implicit_prm=ImplicitPRMSpec(),
        )
    with pytest.raises(ConfigError, match="implicit_prm with policy.lora"):
        base = PPOConfig()
        PPOConfig(
            policy=dataclasses.replace(base.policy, lora=LoRASpec()),
            reward=RewardSpec(use_prm=True, method="prime"),
            implicit_prm=ImplicitPRMSpec(),
        )
    with pytest.raises(ConfigError, match="implicit_prm.beta must be > 0"):
        ImplicitPRMSpec(beta=0.0)
    # a YAML / command-line section: no `prm` model is needed, the defaults are PRIME's
    config = load_config(
        PPOConfig, None, ["reward.use_prm=true", "reward.method=prime", "implicit_prm={}"]
    )
    assert config.prm is None and config.implicit_prm == ImplicitPRMSpec(beta=0.05)
    with pytest.raises(ConfigError, match="implicit_prm"):
        load_config(PPOConfig, None, ["implicit_prm.beta=0.1"])  # method clip_delta


@pytest.fixture(scope="module")
def scored_pair():
    """A rollout scored with an implicit PRM that is another network than the reference."""
    m = dataclasses.replace(models(), implicit_prm=models().policy)
    trainable, frozen = params()
    trainable["implicit_prm"] = params(seed=2)[0]["policy"]
    data = rollout()
    data = data._replace(success=np.asarray([1, 0, 1, 0, 0, 1, 1, 0], np.float32))
    scored = jax.jit(functools.partial(ppo_core.score_rollout, m))(trainable, frozen, data)
    return data, scored


def loop_prime_process(token_rewards, mask):
    """PRIME's compute_rloo_returns, process half, row by row: r G/(G-1) - sum_j m_j/(G-1)
    with m_j the mean token reward of sample j, then summed to go."""
    out = np.zeros((B, T))
    for p in range(B // G):
        rows = range(p * G, (p + 1) * G)
        means = {b: token_rewards[b, mask[b] > 0].mean() for b in rows}
        for b in rows:
            n = int(mask[b].sum())
            total = sum(means.values())
            r = [token_rewards[b, t] * G / (G - 1) - total / (G - 1) for t in range(n)]
            for t in range(n):
                out[b, t] = sum(r[t:])
    return out


def test_prime_rewards_under_grpo_and_ppo_against_loops(scored_pair):
    data, scored = scored_pair
    mask = np.asarray(data.response_mask)
    beta = 0.3
    log_ratio = np.asarray(scored.implicit_logp) - np.asarray(scored.ref_logp)
    assert np.abs(log_ratio * mask).max() > 1e-3  # a reward that is not 0
    r = PRIME.alpha * beta * log_ratio * mask
    none = dataclasses.replace(PRIME, use_prm=False)
    build = functools.partial(
        ppo_core.build_experience, implicit_prm_beta=beta, group_size=G, whiten_advantages=False
    )
    # grpo: the algorithm's outcome advantage plus PRIME's leave-one-out process return
    prime, metrics = build(data, scored, PRIME, algorithm="grpo", kl_in_loss=True)
    plain, _ = build(data, scored, none, algorithm="grpo", kl_in_loss=True)
    np.testing.assert_allclose(
        np.asarray(prime.advantages) - np.asarray(plain.advantages),
        loop_prime_process(r, mask),
        atol=1e-5,
    )
    np.testing.assert_allclose(np.asarray(prime.labels), np.asarray(data.success))
    assert plain.labels is None
    np.testing.assert_allclose(float(metrics["reward/prm"]), r.sum() / B, rtol=1e-5)
    # ppo: the token rewards join GAE's (gamma = lam = 1): returns grow by their sum to go
    prime, _ = build(data, scored, PRIME, algorithm="ppo")
    plain, _ = build(data, scored, none, algorithm="ppo")
    to_go = np.flip(np.cumsum(np.flip(r, axis=1), axis=1), axis=1) * mask
    np.testing.assert_allclose(
        np.asarray(prime.returns) - np.asarray(plain.returns), to_go, atol=1e-5
    )


def test_prime_needs_the_implicit_prms_log_probs(scored_pair):
    data, scored = scored_pair
    with pytest.raises(ValueError, match="implicit PRM's log-probs"):
        ppo_core.build_experience(
            data, scored._replace(implicit_logp=None), PRIME, algorithm="grpo", group_size=G
        )


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("ppo_prime_assets"))


@pytest.fixture(scope="module")
def straight(assets, tmp_path_factory):
    """A 4-iteration PRIME run, uninterrupted: (trainer, out_dir, the params it started from)."""
    out = tmp_path_factory.mktemp("prime_straight")
    trainer = PPOTrainer(prime_config(assets, out, iterations=4))
    start = jax.device_get(trainer.state.params)
    trainer.run()
    return trainer, out, start


def test_the_implicit_prm_starts_as_the_policy_and_trains(straight):
    trainer, out, start = straight
    assert set(start) == {"policy", "implicit_prm"}
    for a, b in zip(jax.tree.leaves(start["implicit_prm"]), jax.tree.leaves(start["policy"])):
        np.testing.assert_array_equal(a, b)
    rows = read_metrics(out)
    # pi_phi = pi_ref at the first scoring: its reward is exactly 0; then it has trained
    assert rows[0]["reward/prm"] == 0.0
    assert any(row["reward/prm"] != 0.0 for row in rows[1:])
    assert all(np.isfinite(row["loss/implicit_prm"]) for row in rows)
    assert all(0.0 <= row["implicit_prm/accuracy"] <= 1.0 for row in rows)
    assert "warning/prm_rewards_all_zero" not in rows[0]
    end = jax.device_get(trainer.state.params)
    for name in ("implicit_prm", "policy"):
        moved = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(end[name]),
                                                      jax.tree.leaves(start[name]))]  # fmt: skip
        assert max(moved) > 0, name
    assert set(trainer.state.opt_state) == {"policy", "implicit_prm"}


@pytest.mark.slow_subprocess
def test_sigkill_then_resume_is_bitwise_equal_to_uninterrupted(straight, assets, tmp_path):
    trainer, _, _ = straight
    killed = run_script(assets, tmp_path, "kill", config="prime_config")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = PPOTrainer(prime_config(assets, tmp_path, iterations=4))
    summary = resumed.run()
    assert summary["start_iteration"] in (1, 2) and summary["end_iteration"] == 4
    pairs = zip(jax.tree.leaves(resumed.state), jax.tree.leaves(trainer.state))
    for x, y in pairs:
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_run_without_the_implicit_prm_cannot_resume_one(straight, assets):
    _, out, _ = straight
    with pytest.raises(ValueError, match="trains policy and implicit_prm"):
        PPOTrainer(tiny_config(assets, out, algorithm="grpo", iterations=5)).run()


def test_plan_sizes_the_implicit_prm_as_a_trained_copy_of_the_policy(assets, tmp_path):
    from rlr.plan import plan_shapes

    mesh = {"data": 1, "fsdp": 1, "tensor": 1}
    grpo = plan_shapes(tiny_config(assets, tmp_path, algorithm="grpo"), mesh)
    prime = plan_shapes(prime_config(assets, tmp_path), mesh)
    assert prime["parameters"]["implicit_prm"] == prime["parameters"]["policy"]
    held, base = prime["per_device_bytes"], grpo["per_device_bytes"]
    assert held["trainable_params"] == 2 * base["trainable_params"]
    assert held["optimizer_state"] > base["optimizer_state"]
    assert held["frozen_params"] == base["frozen_params"]


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_the_reproduction_variant_is_a_valid_run(algorithm):
    from rlr.reproduce.schemas import GROUP_ONLY_VARIANTS, REWARD_VARIANTS

    assert "prime" not in GROUP_ONLY_VARIANTS  # a critic's GAE sums its token rewards
    overrides = [f"{k}={json.dumps(v)}" for k, v in REWARD_VARIANTS["prime"].items()]
    config = load_config(PPOConfig, None, [*overrides, f"algorithm={algorithm}"])
    assert config.reward.method == "prime" and config.implicit_prm == ImplicitPRMSpec()
