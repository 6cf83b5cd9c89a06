"""Critic-free training (GRPO, Dr. GRPO, RLOO): experience against loop references, one GRPO
update against a loop reference of the whole update, and config checks."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ppo_fixtures import B, K, P, T, models, params, rollout
from test_group_advantages import reference_outcome, reference_process

import rlr
from rlr.config_loading import ConfigError
from rlr.training import ppo_core
from rlr.training.schemas import ALGORITHM_DEFAULTS, PPOConfig, RewardSpec, RolloutSpec
from rlr.training.train_state import init_train_state

G = 4  # samples per prompt: the fixture's 8 rows are 2 prompts x 4 samples


@pytest.fixture(scope="module")
def setup():
    m = dataclasses.replace(models(), critic=None)
    trainable, frozen = params()
    frozen = {**frozen, "reference": params(seed=1)[0]["policy"]}  # a KL that is not 0
    data = rollout()
    scored = jax.jit(functools.partial(ppo_core.score_rollout, m))(
        {"policy": trainable["policy"]}, frozen, data
    )
    return m, {"policy": trainable["policy"]}, data, scored


def reference_advantages(data, scored, reward, algorithm, kl_in_loss):
    """Outcome reward per sample -> group advantage on every token, plus alpha times the
    group-normalised reward-to-go of the shaped step rewards; loops over rows and tokens."""
    defaults = ALGORITHM_DEFAULTS[algorithm]
    mask = np.asarray(data.response_mask)
    outcome = np.zeros(B)
    for b in range(B):
        outcome[b] = float(data.success[b])
        if reward.use_orm:
            outcome[b] += reward.orm_weight * float(scored.orm_score[b])
        if not kl_in_loss:
            for t in range(int(mask[b].sum())):
                kl = float(scored.old_logp[b, t]) - float(scored.ref_logp[b, t])
                outcome[b] -= reward.kl_coef * kl
    per_sample = reference_outcome(
        outcome.reshape(B // G, G),
        scale=defaults.group_scale,
        leave_one_out=defaults.leave_one_out,
    ).reshape(B)
    expected = per_sample[:, None] * mask
    if reward.use_prm:
        shaped = np.asarray(
            rlr.shape_process_rewards(
                scored.step_scores, data.step_mask, method=reward.method, eta=reward.eta
            )
        )
        process = reference_process(
            shaped.reshape(B // G, G, K),
            np.asarray(data.step_mask).reshape(B // G, G, K),
            np.asarray(data.step_end).reshape(B // G, G, K),
            mask.reshape(B // G, G, T),
            scale=defaults.group_scale if reward.process_normalization == "group" else "none",
            center=reward.process_normalization == "group",
        )
        expected = expected + reward.alpha * process.reshape(B, T)
    return expected


@pytest.mark.parametrize(
    "algorithm, method, normalization, kl_in_loss",
    [
        ("grpo", "clip_delta", "group", True),
        ("grpo", "raw", "none", False),
        ("dr_grpo", "clip", "group", True),
        ("rloo", "delta", "none", False),
    ],
)
def test_experience_matches_the_loop_reference(setup, algorithm, method, normalization, kl_in_loss):
    _, _, data, scored = setup
    reward = RewardSpec(
        use_prm=True, use_orm=True, method=method, alpha=0.5, eta=0.6, orm_weight=0.3,
        kl_coef=0.05, process_normalization=normalization,
    )  # fmt: skip
    fn = functools.partial(
        ppo_core.build_experience,
        reward=reward,
        algorithm=algorithm,
        group_size=G,
        kl_in_loss=kl_in_loss,
    )
    exp, metrics = jax.jit(fn)(data, scored)
    want = reference_advantages(data, scored, reward, algorithm, kl_in_loss)
    np.testing.assert_allclose(exp.advantages, want, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(exp.returns) == 0) and "value/mean" not in metrics
    np.testing.assert_array_equal(exp.ref_logp, scored.ref_logp)


def reference_grpo_loss(m, params, exp, *, clip_eps, kl_coef):
    """GRPO's loss written out row by row: each row's token mean of the clipped surrogate and
    of the k3 KL to the reference, averaged over the rows that have tokens."""
    ids = exp.input_ids
    logits = m.policy.apply({"params": params["policy"]}, ids, exp.attention_mask)
    logp_all = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    surrogate_rows, kl_rows = [], []
    lengths = np.asarray(exp.response_mask).sum(axis=1).astype(int)  # exp holds constants
    for b in range(B):
        n = int(lengths[b])
        if n == 0:
            continue
        # response token t sits at column P + t and is predicted by column P + t - 1
        tokens = ids[b, P : P + n]
        logp = logp_all[b, P - 1 + jnp.arange(n), tokens]
        ratio = jnp.exp(logp - exp.old_logp[b, :n])
        a = exp.advantages[b, :n]
        surrogate = jnp.maximum(-a * ratio, -a * jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps))
        log_ratio = exp.ref_logp[b, :n] - logp
        surrogate_rows.append(jnp.sum(surrogate) / n)
        kl_rows.append(jnp.sum(jnp.exp(log_ratio) - 1.0 - log_ratio) / n)
    return sum(surrogate_rows) / len(surrogate_rows) + kl_coef * sum(kl_rows) / len(kl_rows)


def test_one_grpo_update_equals_a_loop_reference(setup):
    m, trainable, data, scored = setup
    reward = RewardSpec(use_prm=True, method="clip_delta", eta=0.6, kl_coef=0.05)
    exp, _ = ppo_core.build_experience(data, scored, reward, algorithm="grpo", group_size=G,
                                       kl_in_loss=True)  # fmt: skip
    tx = ppo_core.make_ppo_optimizer(
        policy_lr=1e-2, critic_lr=None, weight_decay=0.0, max_grad_norm=1.0
    )
    state = init_train_state(jax.tree.map(jnp.copy, trainable), tx)
    assert set(state.params) == {"policy"} and set(state.opt_state) == {"policy"}
    update = functools.partial(
        ppo_core.ppo_update, m, tx, clip_eps=0.2, value_clip_eps=0.2,
        aggregation="sequence_mean", kl_coef=0.05,
    )  # fmt: skip
    new_state, metrics = jax.jit(update)(state, exp)
    loss_fn = functools.partial(reference_grpo_loss, m, exp=exp, clip_eps=0.2, kl_coef=0.05)
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(trainable)  # exp is a constant

    @jax.jit  # one program, not one per optimizer operation and leaf
    def adam_step(grads, params):
        updates, _ = tx.update(grads, tx.init(params), params)
        return optax.apply_updates(params, updates)

    want = adam_step(grads, trainable)
    np.testing.assert_allclose(metrics["loss/total"], loss, rtol=1e-5, atol=1e-6)
    assert float(metrics["loss/kl"]) > 0 and "loss/value" not in metrics
    production = functools.partial(
        ppo_core.ppo_loss, m, batch=exp, clip_eps=0.2, value_clip_eps=0.2,
        aggregation="sequence_mean", kl_coef=0.05,
    )  # fmt: skip
    mine = jax.jit(jax.grad(lambda p: production(p)[0]))(trainable)
    for got, ref in zip(jax.tree.leaves(mine), jax.tree.leaves(grads)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-7)
    # Adam's first step moves each weight by about lr * sign(g): 1e-4 is 1% of that move
    for got, ref in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(want)):
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_algorithm_settings_and_their_checks():
    grpo = PPOConfig(algorithm="grpo", rollout=RolloutSpec(samples_per_prompt=2))
    assert not grpo.uses_critic and grpo.kl_in_loss and grpo.loss_aggregation == "sequence_mean"
    dr = PPOConfig(algorithm="dr_grpo", rollout=RolloutSpec(samples_per_prompt=2))
    assert dr.loss_aggregation == "token_sum"
    rloo = dataclasses.replace(grpo, algorithm="rloo", reward=RewardSpec(kl_in_loss=True))
    assert rloo.kl_in_loss and not PPOConfig().kl_in_loss and PPOConfig().uses_critic
    with pytest.raises(ConfigError, match="rollout.samples_per_prompt must be >= 2"):
        PPOConfig(algorithm="grpo", rollout=RolloutSpec(samples_per_prompt=1))
