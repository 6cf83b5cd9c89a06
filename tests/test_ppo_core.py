import functools
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ppo_fixtures import B, P, T, models, params, rollout

from rlr.training import ppo_core
from rlr.training.schemas import RewardSpec
from rlr.training.train_state import init_train_state


@pytest.fixture(scope="module")
def setup():
    m = models()
    trainable, frozen = params()
    data = rollout()
    scored = jax.jit(functools.partial(ppo_core.score_rollout, m))(trainable, frozen, data)
    return m, trainable, frozen, data, scored


def test_scores_read_the_right_columns(setup):
    m, trainable, frozen, data, scored = setup
    ids, attn = data.input_ids, data.attention_mask
    logits = m.policy.apply({"params": trainable["policy"]}, ids, attn)
    logp = jax.nn.log_softmax(logits, axis=-1)
    values = m.critic.apply({"params": trainable["critic"]}, ids, attn)[..., 0]
    prm = m.prm.apply({"params": frozen["prm"]}, ids, attn)[..., 0]
    for b in range(B):
        n = int(data.response_mask[b].sum())
        for t in range(T):
            if t < n:
                want = logp[b, P + t - 1, ids[b, P + t]]
                np.testing.assert_allclose(scored.old_logp[b, t], want, rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(scored.old_values[b, t], values[b, P + t - 1], atol=1e-5)
            else:
                assert scored.old_logp[b, t] == 0 and scored.old_values[b, t] == 0
        for k in range(data.step_end.shape[1]):
            if data.step_mask[b, k]:
                want = jax.nn.sigmoid(prm[b, P + data.step_end[b, k]])
                np.testing.assert_allclose(scored.step_scores[b, k], want, atol=1e-6)
        orm = m.orm.apply({"params": frozen["orm"]}, ids, attn)[..., 0]
        np.testing.assert_allclose(
            scored.orm_score[b], jax.nn.sigmoid(orm[b, P + n - 1]), atol=1e-6
        )
    # The reference is the initial policy, so the KL starts at exactly zero.
    np.testing.assert_allclose(scored.old_logp, scored.ref_logp, atol=1e-6)


def test_sampled_logprobs_replace_the_policy_pass(setup):
    m, trainable, frozen, data, scored = setup
    sampled = np.asarray(scored.old_logp) + 0.25 * np.asarray(data.response_mask)
    with_sampled = data._replace(sampled_logp=jax.numpy.asarray(sampled))
    again = jax.jit(functools.partial(ppo_core.score_rollout, m))(trainable, frozen, with_sampled)
    np.testing.assert_array_equal(again.old_logp, sampled)
    for name in ("ref_logp", "old_values", "step_scores", "orm_score"):
        np.testing.assert_array_equal(getattr(again, name), getattr(scored, name))


@pytest.mark.parametrize("method", ["raw", "clip_delta"])
def test_experience_follows_paper_order(setup, method):
    _, _, _, data, scored = setup
    reward = RewardSpec(use_prm=True, method=method, alpha=0.5, eta=0.3, kl_coef=0.0)
    exp, metrics = ppo_core.build_experience(data, scored, reward, whiten_advantages=False)
    # gamma = lam = 1: return at token 0 = sum of rewards in the row (value baseline cancels).
    import rlr

    rewards = rlr.token_rewards(
        data.success,
        data.response_mask,
        scored.step_scores,
        data.step_end,
        data.step_mask,
        method=method,
        alpha=0.5,
        eta=0.3,
    ).total
    np.testing.assert_allclose(exp.returns[:, 0], rewards.sum(axis=1), rtol=1e-5, atol=1e-5)
    if method == "clip_delta":  # telescoped: alpha * c_1 + Correct, never above Correct
        assert np.all(np.asarray(exp.returns[:, 0]) <= np.asarray(data.success) + 1e-6)
    assert set(metrics) >= {"reward/success", "reward/prm", "value/explained_variance"}


def test_updates_lower_the_ppo_loss(setup):
    m, trainable, _, data, scored = setup
    exp, _ = ppo_core.build_experience(
        data, scored, RewardSpec(use_prm=True, use_orm=True, eta=0.5, kl_coef=0.05)
    )
    tx = ppo_core.make_ppo_optimizer(
        policy_lr=3e-3, critic_lr=3e-3, weight_decay=0.0, max_grad_norm=1.0
    )
    state = init_train_state(trainable, tx)
    step = jax.jit(
        functools.partial(ppo_core.ppo_update, m, tx, clip_eps=0.2, value_clip_eps=10.0),
        donate_argnums=0,
    )
    losses = []
    for _ in range(8):
        state, metrics = step(state, exp)
        losses.append(float(metrics["loss/value"]))
    assert int(state.step) == 8 and int(state.skipped) == 0
    assert losses[-1] < losses[0]
    assert 0.0 <= float(metrics["policy/clip_fraction"]) <= 1.0


def loop_gae(rewards, values, mask, bootstrap):
    """GAE with gamma = lam = 1, row by row; the last token's next value is bootstrap[b]."""
    adv = np.zeros(rewards.shape)
    for b in range(rewards.shape[0]):
        n, acc = int(mask[b].sum()), 0.0
        for t in reversed(range(n)):
            next_value = values[b, t + 1] if t + 1 < n else bootstrap[b]
            acc = rewards[b, t] + next_value - values[b, t] + acc
            adv[b, t] = acc
    return adv, (adv + values) * mask


def test_truncated_rows_get_no_outcome_reward_and_bootstrap(setup):
    m, _, _, data, scored = setup
    trainable, _ = params()  # the fixture's were donated by an update test
    data = data._replace(
        success=jax.numpy.ones(B), truncated=jax.numpy.asarray(np.arange(B) % 2, np.float32)
    )
    ids, attn = np.asarray(data.input_ids), np.asarray(data.attention_mask)
    mask, truncated = np.asarray(data.response_mask), np.asarray(data.truncated)
    # V(s_L): the critic at the last response token, column P + L - 1
    critic = np.asarray(m.critic.apply({"params": trainable["critic"]}, ids, attn)[..., 0])
    lengths = mask.sum(axis=1).astype(int)
    final = critic[np.arange(B), P + lengths - 1]
    np.testing.assert_allclose(scored.final_value, final, atol=1e-5)
    assert np.all(np.abs(final) > 1e-3)  # a bootstrap that changes the advantages

    reward = RewardSpec(use_orm=True, orm_weight=0.5, kl_coef=0.0)
    values = np.asarray(scored.old_values)
    for truncation, boot in [("grade", 0 * final), ("zero_and_bootstrap", final * truncated)]:
        exp, metrics = ppo_core.build_experience(
            data, scored, reward, whiten_advantages=False, truncation=truncation
        )
        outcome = 1.0 + 0.5 * np.asarray(scored.orm_score)
        if truncation != "grade":
            outcome = outcome * (1 - truncated)
        rewards = np.zeros((B, T))
        rewards[np.arange(B), lengths - 1] = outcome
        want_adv, want_ret = loop_gae(rewards, values, mask, boot)
        np.testing.assert_allclose(exp.advantages, want_adv, atol=1e-5)
        np.testing.assert_allclose(exp.returns, want_ret, atol=1e-5)
        want_success = B if truncation == "grade" else B - truncated.sum()
        np.testing.assert_allclose(metrics["reward/success"], want_success / B, rtol=1e-6)
    # a truncated row's return at its first token: its values' telescoped sum ends in V(s_L)
    row = 1
    np.testing.assert_allclose(exp.returns[row, 0], final[row], atol=1e-5)
    # "zero" zeroes the same rewards and ends the episode with 0
    exp, _ = ppo_core.build_experience(
        data, scored, reward, whiten_advantages=False, truncation="zero"
    )
    np.testing.assert_allclose(exp.returns[row, 0], 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="needs rollout.truncated"):
        ppo_core.build_experience(data._replace(truncated=None), scored, reward, truncation="zero")


def test_value_norm_denormalises_for_gae_and_trains_on_normalised_returns(setup):
    import rlr

    _, _, _, data, scored = setup
    reward = RewardSpec(kl_coef=0.0)
    stats = rlr.ValueNormStats(*(jax.numpy.float32(v) for v in (0.1, 0.5, 0.2)))
    exp, metrics, new_stats = ppo_core.build_experience(
        data, scored, reward, whiten_advantages=False, value_stats=stats, value_norm_beta=0.9
    )
    mask = np.asarray(data.response_mask)
    mean, std = 0.5, np.sqrt(2.5 - 0.25)  # debiased: 0.1 / 0.2, 0.5 / 0.2 - mean^2
    values = (np.asarray(scored.old_values) * std + mean) * mask
    lengths = mask.sum(axis=1).astype(int)
    rewards = np.zeros((B, T))
    rewards[np.arange(B), lengths - 1] = np.asarray(data.success)
    want_adv, raw_returns = loop_gae(rewards, values, mask, np.zeros(B))
    np.testing.assert_allclose(exp.advantages, want_adv, atol=1e-5)
    want_stats = rlr.value_norm_update(stats, jax.numpy.asarray(raw_returns), mask, beta=0.9)
    for got, want in zip(new_stats, want_stats):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    new_mean, new_std = rlr.value_norm_mean_std(want_stats)
    targets = np.clip((raw_returns - new_mean) / new_std, -5, 5) * mask
    np.testing.assert_allclose(exp.returns, targets, atol=1e-5)
    np.testing.assert_array_equal(exp.old_values, scored.old_values)  # the critic's own units
    np.testing.assert_allclose(metrics["value_norm/mean"], new_mean, rtol=1e-6)


def test_early_stop_skips_the_policy_step_on_a_large_importance_ratio(setup):
    m, _, _, data, scored = setup
    trainable, _ = params()  # the fixture's were donated by an update test
    exp, _ = ppo_core.build_experience(data, scored, RewardSpec(kl_coef=0.0))
    # old log-probs 1.0 below the current ones: every ratio is e = 2.718...
    exp = exp._replace(old_logp=(exp.old_logp - 1.0) * exp.response_mask)
    tx = ppo_core.make_ppo_optimizer(
        policy_lr=1e-3, critic_lr=1e-3, weight_decay=0.0, max_grad_norm=1.0
    )
    for threshold, stopped in [(2.5, True), (3.0, False)]:
        state = init_train_state(jax.tree.map(jax.numpy.copy, trainable), tx)
        step = functools.partial(
            ppo_core.ppo_update,
            m,
            tx,
            clip_eps=0.2,
            value_clip_eps=0.2,
            early_stop_ratio=threshold,
            dual_clip=3.0,
        )
        new, metrics = jax.jit(step)(state, exp)
        np.testing.assert_allclose(metrics["policy/ratio_mean"], np.e, rtol=1e-4)
        assert float(metrics["policy/early_stopped"]) == float(stopped)
        same = [
            np.array_equal(a, b)
            for a, b in zip(
                jax.tree.leaves(new.params["policy"]), jax.tree.leaves(trainable["policy"])
            )
        ]
        assert all(same) == stopped
        policy_moments = jax.tree.leaves(new.opt_state["policy"])
        assert all(np.all(np.asarray(x) == 0) for x in policy_moments[1:]) == stopped
        # the critic steps either way
        assert not all(
            np.array_equal(a, b)
            for a, b in zip(
                jax.tree.leaves(new.params["critic"]), jax.tree.leaves(trainable["critic"])
            )
        )
        assert "policy/dual_clip_fraction" in metrics


def test_warmup_ramps_each_learning_rate_from_zero():
    params = {"policy": {"w": np.ones(3, np.float32)}, "critic": {"w": np.ones(2, np.float32)}}
    grads = jax.tree.map(np.ones_like, params)

    def steps(warmup):
        tx = ppo_core.make_ppo_optimizer(
            policy_lr=1e-2, critic_lr=2e-2, weight_decay=0.0, max_grad_norm=10.0,
            warmup_steps=warmup,
        )  # fmt: skip
        state, current, moves = tx.init(params), params, []
        for _ in range(4):
            updates, state = tx.update(grads, state, current)
            moves.append({k: float(np.abs(updates[k]["w"]).max()) for k in updates})
            current = jax.tree.map(lambda p, u: p + u, current, updates)
        return moves

    plain, warm = steps(0), steps(3)
    # Adam's first steps move every weight by about lr; the warm-up scales lr by t / 3
    np.testing.assert_allclose([m["policy"] for m in plain], 1e-2, rtol=1e-3)
    np.testing.assert_allclose([m["critic"] for m in plain], 2e-2, rtol=1e-3)
    np.testing.assert_allclose(
        [m["policy"] for m in warm], [0, 1e-2 / 3, 2e-2 / 3, 1e-2], rtol=1e-3
    )
    np.testing.assert_allclose(
        [m["critic"] for m in warm], [0, 2e-2 / 3, 4e-2 / 3, 2e-2], rtol=1e-3
    )
    with pytest.raises(ValueError, match="warmup_steps must be >= 0"):
        ppo_core.make_ppo_optimizer(
            policy_lr=1e-3, critic_lr=1e-3, weight_decay=0.0, max_grad_norm=1.0, warmup_steps=-1
        )


def test_the_ppo_config_warmup_reaches_the_optimizer(monkeypatch):
    from rlr import sharding
    from rlr.training import ppo_build
    from rlr.training.schemas import ModelSpec, PPOConfig, PPOSpec

    seen = {}
    real = ppo_build.make_ppo_optimizer
    monkeypatch.setattr(ppo_build, "make_ppo_optimizer", lambda **kw: seen.update(kw) or real(**kw))
    arch = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1}  # fmt: skip
    config = PPOConfig(
        tokenizer="-", policy=ModelSpec(architecture=arch), ppo=PPOSpec(warmup_steps=7)
    )
    ppo_build.build_ppo(config, mesh=sharding.make_mesh(), abstract=True)
    assert seen["warmup_steps"] == 7


EIGHT_DEVICES = textwrap.dedent(
    """
    import dataclasses, os, sys, functools
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"  # after the suite's
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, sys.argv[1])
    import jax, jax.numpy as jnp, numpy as np
    from ppo_fixtures import models, params, rollout
    from rlr import sharding
    from rlr.training import ppo_core
    from rlr.training.schemas import RewardSpec
    from rlr.training.train_state import init_train_state, train_state_shardings

    data = rollout()
    # ppo: critic + GAE; grpo: no critic, groups of 4 samples, KL in a sequence-mean loss;
    # prime: grpo with PRIME's implicit PRM, a third trained network (another policy's weights,
    # so that its reward is not 0)
    for case in ("ppo", "grpo", "prime"):
        algorithm = "ppo" if case == "ppo" else "grpo"
        reward = RewardSpec(use_prm=True, use_orm=True, eta=0.5, kl_coef=0.05)
        m, (trainable, frozen) = models(), params()
        critic_lr = implicit_lr = None
        if case == "ppo":
            critic_lr = 1e-3
        else:
            m = dataclasses.replace(m, critic=None)
            trainable = {"policy": trainable["policy"]}
        if case == "prime":
            reward = RewardSpec(use_prm=True, method="prime", kl_coef=0.05)
            m, implicit_lr = dataclasses.replace(m, implicit_prm=m.policy), 1e-3
            trainable["implicit_prm"] = params(seed=3)[0]["policy"]
        tx = ppo_core.make_ppo_optimizer(policy_lr=1e-3, critic_lr=critic_lr, weight_decay=0.01,
                                         max_grad_norm=1.0, implicit_prm_lr=implicit_lr)
        kl_in_loss = algorithm == "grpo"
        update = functools.partial(
            ppo_core.ppo_update, m, tx, clip_eps=0.2, value_clip_eps=0.2,
            aggregation="sequence_mean" if kl_in_loss else "token_mean",
            kl_coef=0.05 if kl_in_loss else 0.0)
        experience = functools.partial(ppo_core.build_experience, reward=reward,
            algorithm=algorithm, group_size=4, kl_in_loss=kl_in_loss)

        def iteration(state, frozen, data):
            scored = ppo_core.score_rollout(m, state.params, frozen, data)
            exp, _ = experience(data, scored)
            state, _ = update(state, exp)
            return state

        start = init_train_state(jax.tree.map(jnp.copy, trainable), tx)
        ref = jax.jit(iteration)(start, frozen, data)

        # every mesh for ppo (policy and critic); the critic-free cases, whose networks are the
        # same modules under the same rules, on one mesh that splits both weight axes each
        split = dict(data=1, fsdp=4, tensor=2)
        mixed = dict(data=2, fsdp=2, tensor=2)
        shapes = {"ppo": [dict(data=8), split, mixed], "grpo": [split], "prime": [mixed]}
        for shape in shapes[case]:
            mesh = sharding.make_mesh(**shape)
            scorer = models().critic
            abstract = jax.eval_shape(lambda: {"policy": m.policy.init(jax.random.key(0),
                np.zeros((1, 4), np.int32))["params"], "critic": scorer.init(jax.random.key(0),
                np.zeros((1, 4), np.int32))["params"]})
            shard = sharding.param_shardings(abstract, mesh)
            shard["implicit_prm"] = shard["policy"]
            p_shard = {name: shard[name] for name in trainable}
            f_shard = {"reference": shard["policy"], "prm": shard["critic"], "orm": shard["critic"]}
            state_shard = train_state_shardings(tx, trainable, p_shard, mesh)
            fresh = jax.tree.map(jnp.copy, trainable)  # donation must not free the originals
            state = jax.device_put(init_train_state(fresh, tx), state_shard)
            put = lambda x: jax.device_put(x, sharding.batch_sharding(mesh, x.ndim))
            batch = jax.tree.map(put, data)
            out = jax.jit(iteration, out_shardings=state_shard, donate_argnums=0)(
                state, jax.device_put(frozen, f_shard), batch)
            gate = out.params["policy"]["model"]["layers"]["mlp"]["gate_proj"]["kernel"]
            want = jax.sharding.PartitionSpec(None, "fsdp", "tensor")  # [L, D, F]
            assert gate.sharding.spec == want, gate.sharding
            assert set(out.params) == set(trainable), (algorithm, set(out.params))
            for name in out.params:
                pairs = zip(jax.tree.leaves(out.params[name]), jax.tree.leaves(ref.params[name]))
                worst = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in pairs)
                # PRIME's log-ratio rewards and cross-entropy give gradient entries near 0, where
                # Adam's first step (about lr * sign(g), lr = 1e-3) turns reduction-order
                # rounding into differences up to a few 1e-5 (2.8e-5 seen on data=8)
                assert worst < (1e-4 if case == "prime" else 1e-5), (case, shape, name, worst)
            print("ok", case, shape, worst)
    """
)


@pytest.mark.sharding
def test_sharded_ppo_update_matches_unsharded_on_eight_fake_devices():
    import pathlib

    here = str(pathlib.Path(__file__).parent)
    proc = subprocess.run(
        [sys.executable, "-c", EIGHT_DEVICES, here], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("ok") == 5, proc.stdout


def test_config_checks_the_truncation_value_norm_and_clip_options():
    from rlr.config_loading import ConfigError, load_config
    from rlr.training.schemas import PPOConfig

    def load(*overrides):
        return load_config(PPOConfig, None, list(overrides))

    config = load(
        "ppo.truncation=zero_and_bootstrap",
        "ppo.value_norm=true",
        "ppo.early_stop_ratio=10",
        "ppo.dual_clip=3",
        "reward.kl_estimator=k3",
        "reward.kl_clamp=10",
    )
    assert config.ppo.value_norm_beta == 0.99995 and config.ppo.dual_clip == 3.0
    default = PPOConfig().ppo
    assert (default.truncation, default.value_norm, default.early_stop_ratio) == (
        "grade",
        False,
        None,
    )
    assert default.dual_clip is None and PPOConfig().reward.kl_clamp is None
    from rlr.training.schemas import REALHF_PPO

    realhf = load(*(f"{key}={value}" for key, value in REALHF_PPO.items()))
    assert realhf.ppo.truncation == "zero_and_bootstrap" and realhf.ppo.early_stop_ratio == 5
    grpo = ("algorithm=grpo", "rollout.samples_per_prompt=2")
    assert load(*grpo, "ppo.truncation=zero", "reward.kl_clamp=10").ppo.truncation == "zero"
    for overrides, message in [
        (("ppo.dual_clip=0.5",), "ppo.dual_clip must be > 1"),
        (("ppo.early_stop_ratio=1",), "ppo.early_stop_ratio must be > 1"),
        (("ppo.value_norm_beta=1",), r"ppo.value_norm_beta must be in \(0, 1\)"),
        (("reward.kl_clamp=0",), "reward.kl_clamp must be > 0"),
        (("reward.kl_clamp=10",), "reward.kl_clamp clamps the k3 KL estimate"),
        (grpo + ("ppo.truncation=zero_and_bootstrap",), "use ppo.truncation=zero"),
        (grpo + ("ppo.value_norm=true",), "ppo.value_norm normalises a critic's targets"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load(*overrides)


def test_overlong_penalty_reaches_the_advantages(setup):
    import rlr

    _, _, _, data, scored = setup
    mask = np.asarray(data.response_mask)
    lengths = mask.sum(axis=1).astype(int)
    buffer, factor = 4, 0.5
    # DAPO eq. 13 with L_max = T (the response width, rollout.max_new_tokens)
    penalty = np.array(
        [0.0 if n <= T - buffer else factor * ((T - buffer) - n) / buffer for n in lengths]
    )
    assert np.any(penalty < 0) and np.any(penalty == 0)
    # ppo: a reward at the last token, through GAE (gamma = lam = 1, unwhitened)
    reward = RewardSpec(kl_coef=0.0)
    values = np.asarray(scored.old_values)
    exp, metrics = ppo_core.build_experience(
        data,
        scored,
        reward,
        whiten_advantages=False,
        overlong_buffer=buffer,
        overlong_penalty=factor,
    )
    rewards = np.zeros((B, T))
    rewards[np.arange(B), lengths - 1] = np.asarray(data.success) + penalty
    want_adv, _ = loop_gae(rewards, values, mask, np.zeros(B))
    np.testing.assert_allclose(exp.advantages, want_adv, atol=1e-5)
    np.testing.assert_allclose(metrics["reward/overlong"], penalty.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["reward/orm"], 0.0, atol=1e-7)
    # grpo: it joins each sample's outcome reward before the group statistics
    exp, _ = ppo_core.build_experience(
        data,
        scored,
        reward,
        algorithm="grpo",
        group_size=2,
        overlong_buffer=buffer,
        overlong_penalty=factor,
    )
    outcome = (np.asarray(data.success) + penalty).reshape(B // 2, 2)
    want = np.asarray(rlr.group_outcome_advantages(outcome, scale="std")).reshape(B)
    np.testing.assert_allclose(exp.advantages, want[:, None] * mask, atol=1e-5)
    plain, _ = ppo_core.build_experience(data, scored, reward, algorithm="grpo", group_size=2)
    assert not np.allclose(plain.advantages, exp.advantages)


@pytest.mark.parametrize("importance_ratio", ["token", "sequence"])
def test_update_reads_the_clip_range_and_the_ratio(setup, importance_ratio):
    import rlr

    m, _, _, data, scored = setup
    trainable, _ = params()
    exp, _ = ppo_core.build_experience(data, scored, RewardSpec(kl_coef=0.0))
    # old log-probs off the policy's, so that the ratio differs from 1 and the clip binds
    exp = exp._replace(old_logp=exp.old_logp + 0.1 * np.sin(np.arange(B * T)).reshape(B, T))
    kwargs = dict(
        clip_eps=0.2,
        value_clip_eps=0.2,
        clip_eps_low=0.05,
        clip_eps_high=0.28,
        aggregation="sequence_mean",
        importance_ratio=importance_ratio,
    )
    # jitted: run eagerly, each operation on each shape compiles a program of its own
    total, metrics = jax.jit(functools.partial(ppo_core.ppo_loss, m, **kwargs))(trainable, exp)
    readout = jax.jit(functools.partial(ppo_core.policy_readout, m.policy, T=T))
    logp = readout(trainable["policy"], exp.input_ids, exp.attention_mask).logprobs
    want, _ = rlr.ppo_policy_loss(
        logp,
        exp.old_logp,
        exp.advantages,
        exp.response_mask,
        clip_eps=0.2,
        clip_eps_low=0.05,
        clip_eps_high=0.28,
        aggregation="sequence_mean",
        importance_ratio=importance_ratio,
    )
    np.testing.assert_allclose(metrics["loss/policy"], want, rtol=1e-5)
    assert ("policy/sequence_ratio_mean" in metrics) == (importance_ratio == "sequence")
    tx = ppo_core.make_ppo_optimizer(
        policy_lr=1e-3, critic_lr=1e-3, weight_decay=0.0, max_grad_norm=1.0
    )
    update = jax.jit(functools.partial(ppo_core.ppo_update, m, tx, **kwargs))
    state, metrics = update(init_train_state(trainable, tx), exp)
    assert int(state.step) == 1 and np.isfinite(float(metrics["loss/total"]))


def test_config_checks_the_dapo_and_gspo_options():
    from rlr.config_loading import ConfigError, load_config
    from rlr.training.schemas import PPOConfig

    def load(*overrides):
        return load_config(PPOConfig, None, list(overrides))

    default = PPOConfig()
    assert (default.ppo.clip_eps_low, default.ppo.clip_eps_high) == (None, None)
    assert default.ppo.importance_ratio == "token"
    assert (default.reward.overlong_buffer, default.reward.overlong_penalty) == (None, None)
    assert (default.rollout.dynamic_sampling, default.rollout.max_sampling_rounds) == (False, None)
    grpo = ("algorithm=grpo", "rollout.samples_per_prompt=2")
    config = load(
        *grpo,
        "ppo.clip_eps_low=0.2",
        "ppo.clip_eps_high=0.28",
        "ppo.importance_ratio=sequence",
        "reward.overlong_buffer=16",
        "reward.overlong_penalty=1.0",
        "rollout.dynamic_sampling=true",
        "rollout.max_sampling_rounds=3",
    )
    assert config.ppo.clip_eps_high == 0.28 and config.rollout.max_sampling_rounds == 3
    for overrides, message in [
        (("ppo.clip_eps_low=1.0",), r"ppo.clip_eps_low must be in \(0, 1\)"),
        (("ppo.clip_eps_high=0",), "ppo.clip_eps_high must be > 0"),
        (("ppo.importance_ratio=sequence",), "set ppo.loss_aggregation=sequence_mean"),
        (
            ("algorithm=dr_grpo", "rollout.samples_per_prompt=2", "ppo.importance_ratio=sequence"),
            "aggregates with token_sum",
        ),
        (("reward.overlong_buffer=0",), "reward.overlong_buffer must be >= 1"),
        (("reward.overlong_buffer=97",), "must be at most rollout.max_new_tokens=96"),
        (("reward.overlong_penalty=0.5",), "reward.overlong_buffer is null"),
        ((*grpo, "rollout.dynamic_sampling=true"), "rollout.max_sampling_rounds: dynamic"),
        ((*grpo, "rollout.max_sampling_rounds=3"), "dynamic sampling, which is off"),
        (
            ("rollout.dynamic_sampling=true", "rollout.max_sampling_rounds=3"),
            "only a group-relative algorithm",
        ),
    ]:
        with pytest.raises(ConfigError, match=message):
            load(*overrides)


def test_the_dapo_and_gspo_presets_load():
    from rlr.config_loading import load_config
    from rlr.training.schemas import DAPO, GSPO, PPOConfig, RolloutSpec, dapo_overrides

    def load(overrides):
        return load_config(PPOConfig, None, [f"{k}={v}" for k, v in overrides.items()])

    assert DAPO["reward.overlong_buffer"] == RolloutSpec().max_new_tokens // 5
    dapo = load({**DAPO, "rollout.samples_per_prompt": 2})
    assert (dapo.ppo.clip_eps_low, dapo.ppo.clip_eps_high) == (0.2, 0.28)
    assert dapo.loss_aggregation == "token_mean" and dapo.effective_reward.kl_coef == 0.0
    assert dapo.rollout.dynamic_sampling and dapo.reward.overlong_buffer == 19
    assert dapo_overrides(20480)["reward.overlong_buffer"] == 4096  # the paper's budget
    gspo = load({**GSPO, "rollout.samples_per_prompt": 2})
    assert gspo.ppo.importance_ratio == "sequence" and gspo.loss_aggregation == "sequence_mean"


@pytest.mark.parametrize(
    "algorithm,aggregation", [("ppo", "token_mean"), ("grpo", "sequence_mean")]
)
def test_a_packed_update_equals_the_padded_update(setup, algorithm, aggregation):
    from rlr.packing import pack_rows

    m, _, _, data, scored = setup
    trainable, _ = params()
    if algorithm == "grpo":
        m = ppo_core.PPOModels(policy=m.policy, critic=None)
        trainable = {"policy": trainable["policy"]}
    exp, _ = ppo_core.build_experience(
        data, scored, RewardSpec(kl_coef=0.0), algorithm=algorithm, group_size=2
    )
    exp = exp._replace(old_logp=exp.old_logp + 0.1 * np.sin(np.arange(B * T)).reshape(B, T))
    ids, attention = np.asarray(exp.input_ids), np.asarray(exp.attention_mask)
    packing = pack_rows(ids, attention, length=2 * (P + T))
    assert packing.input_ids.shape[0] < B // 2 + 1  # several rows share each packed row
    tx = ppo_core.make_ppo_optimizer(
        policy_lr=1e-3,
        critic_lr=1e-3 if m.critic is not None else None,
        weight_decay=0.0,
        max_grad_norm=1.0,
    )
    kwargs = dict(clip_eps=0.2, value_clip_eps=0.2, aggregation=aggregation, kl_coef=0.1)
    update = jax.jit(functools.partial(ppo_core.ppo_update, m, tx, **kwargs))
    padded, padded_metrics = update(init_train_state(trainable, tx), exp)
    packed, packed_metrics = update(
        init_train_state(trainable, tx), exp._replace(packing=jax.tree.map(jnp.asarray, packing))
    )
    assert set(packed.params) == set(trainable)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), packed.params, padded.params
    )
    for name in ("loss/total", "loss/policy", "policy/entropy", "loss/kl"):
        # loss/kl is 0 at the first step (policy = reference) up to rounding
        np.testing.assert_allclose(packed_metrics[name], padded_metrics[name], rtol=1e-5, atol=1e-7)
