"""PURE's softmin and min-form step rewards and PROF's filter in `rlr ppo`: build_experience
against NumPy loops under each algorithm that allows them, and the config checks."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import numpy as np
import pytest
from ppo_fixtures import B, K, T, models, params, rollout
from test_group_advantages import reference_outcome, reference_process

from rlr.config_loading import ConfigError
from rlr.reproduce.schemas import GROUP_ONLY_VARIANTS, REWARD_VARIANTS
from rlr.training import ppo_core
from rlr.training.schemas import (
    ALGORITHM_DEFAULTS,
    ModelSpec,
    PPOConfig,
    RewardSpec,
    RolloutSpec,
)

G = 4  # the fixture's 8 rows are 2 prompts x 4 samples


@pytest.fixture(scope="module")
def setup():
    m = models()
    trainable, frozen = params()
    frozen = {**frozen, "reference": params(seed=1)[0]["policy"]}  # a KL that is not 0
    data = rollout()
    # two correct and two wrong samples in each group, so that PROF has both kinds to drop
    data = data._replace(success=np.asarray([1, 0, 1, 0, 0, 1, 1, 0], np.float32))
    scored = jax.jit(functools.partial(ppo_core.score_rollout, m))(trainable, frozen, data)
    return data, scored


def loop_softmin(scores, step_mask, temperature):
    """PURE's turn_process_reward_logits_to_reward, row by row: w = softmax(-PR / T) over the
    real steps, r_k = w_k PR_k with PR = 2 x - 1."""
    out = np.zeros(scores.shape)
    for b in range(scores.shape[0]):
        real = [k for k in range(scores.shape[1]) if step_mask[b, k]]
        pr = {k: 2.0 * float(scores[b, k]) - 1.0 for k in real}
        z = sum(math.exp(-pr[k] / temperature) for k in real)
        for k in real:
            out[b, k] = math.exp(-pr[k] / temperature) / z * pr[k]
    return out


def loop_outcome(data, scored, reward, algorithm, kl_in_loss, keep=None):
    """Each sample's success (+ summed KL reward) against its group's kept samples."""
    defaults = ALGORITHM_DEFAULTS[algorithm]
    mask = np.asarray(data.response_mask)
    outcome = np.zeros(B)
    for b in range(B):
        outcome[b] = float(data.success[b])
        if not kl_in_loss:
            for t in range(int(mask[b].sum())):
                kl = float(scored.old_logp[b, t]) - float(scored.ref_logp[b, t])
                outcome[b] -= reward.kl_coef * kl
    keep = np.ones(B, bool) if keep is None else keep
    per_sample = np.zeros(B)
    for p in range(B // G):
        rows = [p * G + g for g in range(G) if keep[p * G + g]]
        if np.ptp(outcome[rows]) == 0:
            continue
        per_sample[rows] = reference_outcome(
            outcome[rows][None], scale=defaults.group_scale, leave_one_out=defaults.leave_one_out
        )[0]
    return per_sample[:, None] * mask


def test_pure_softmin_under_ppo_goes_through_gae(setup):
    data, scored = setup
    reward = RewardSpec(use_prm=True, method="pure_softmin", alpha=0.5, softmin_temperature=0.2,
                        kl_coef=0.0)  # fmt: skip
    exp, _ = ppo_core.build_experience(data, scored, reward, whiten_advantages=False)
    mask = np.asarray(data.response_mask)
    steps = loop_softmin(np.asarray(scored.step_scores), np.asarray(data.step_mask), 0.2)
    values = np.asarray(scored.old_values)
    want = np.zeros((B, T))
    for b in range(B):
        n = int(mask[b].sum())
        r = np.zeros(T)
        for k in range(K):
            if data.step_mask[b, k] and int(data.step_end[b, k]) < n:
                r[int(data.step_end[b, k])] += 0.5 * steps[b, k]
        if n:
            r[n - 1] += float(data.success[b])
        for t in range(n):  # gamma = lam = 1: the reward to go less V(s_t)
            want[b, t] = r[t:n].sum() - values[b, t]
    np.testing.assert_allclose(exp.advantages, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "algorithm, normalization, kl_in_loss",
    [("grpo", "none", True), ("dr_grpo", "group", True), ("rloo", "none", False)],
)
def test_pure_softmin_without_a_critic(setup, algorithm, normalization, kl_in_loss):
    data, scored = setup
    reward = RewardSpec(use_prm=True, method="pure_softmin", alpha=0.5, kl_coef=0.05,
                        process_normalization=normalization)  # fmt: skip
    exp, _ = ppo_core.build_experience(data, scored, reward, algorithm=algorithm, group_size=G,
                                       kl_in_loss=kl_in_loss)  # fmt: skip
    defaults = ALGORITHM_DEFAULTS[algorithm]
    mask = np.asarray(data.response_mask)
    # the null temperature is PURE's 0.1
    steps = loop_softmin(np.asarray(scored.step_scores), np.asarray(data.step_mask), 0.1)
    process = reference_process(
        steps.reshape(B // G, G, K),
        np.asarray(data.step_mask).reshape(B // G, G, K),
        np.asarray(data.step_end).reshape(B // G, G, K),
        mask.reshape(B // G, G, T),
        scale=defaults.group_scale if normalization == "group" else "none",
        center=normalization == "group",
    ).reshape(B, T)
    want = loop_outcome(data, scored, reward, algorithm, kl_in_loss) + 0.5 * process
    np.testing.assert_allclose(exp.advantages, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("algorithm, kl_in_loss", [("grpo", True), ("rloo", False)])
def test_min_form_without_a_critic(setup, algorithm, kl_in_loss):
    data, scored = setup
    reward = RewardSpec(use_prm=True, method="min_form", alpha=0.7, kl_coef=0.05,
                        process_normalization="none")  # fmt: skip
    exp, metrics = ppo_core.build_experience(data, scored, reward, algorithm=algorithm,
                                             group_size=G, kl_in_loss=kl_in_loss)  # fmt: skip
    mask = np.asarray(data.response_mask)
    want = loop_outcome(data, scored, reward, algorithm, kl_in_loss)
    for b in range(B):
        n = int(mask[b].sum())
        for t in range(n):  # the worst signed step score among the steps ending at or after t
            later = [
                2.0 * float(scored.step_scores[b, k]) - 1.0
                for k in range(K)
                if data.step_mask[b, k] and t <= int(data.step_end[b, k]) < n
            ]
            want[b, t] += 0.7 * (min(later) if later else 0.0)
    np.testing.assert_allclose(exp.advantages, want, rtol=1e-4, atol=1e-5)
    assert "prof/dropped_rows" not in metrics


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_prof_drops_rows_and_takes_group_statistics_over_the_kept(setup, algorithm):
    data, scored = setup
    reward = RewardSpec(use_prm=False, prof_remove=2, kl_coef=0.05)
    exp, metrics = ppo_core.build_experience(data, scored, reward, algorithm=algorithm,
                                             group_size=G, kl_in_loss=True)  # fmt: skip
    # PROF's rule written out: per group, with d = #correct - #wrong and n = 2, drop
    # min(n, round((d + n) / 2)) correct samples of lowest mean step score and the rest of n
    # from the wrong ones of highest mean step score
    mask = np.asarray(data.response_mask)
    step_mask = np.asarray(data.step_mask)
    mean_score = (np.asarray(scored.step_scores) * step_mask).sum(1) / np.maximum(
        step_mask.sum(1), 1
    )
    keep = np.ones(B, bool)
    for p in range(B // G):
        rows = list(range(p * G, (p + 1) * G))
        right = [b for b in rows if data.success[b] > 0.5]
        wrong = [b for b in rows if data.success[b] <= 0.5]
        drop_right = min(2, round((len(right) - len(wrong) + 2) / 2), len(right))
        drop_wrong = min(2 - drop_right, len(wrong))
        for b in sorted(right, key=lambda b: mean_score[b])[:drop_right]:
            keep[b] = False
        for b in sorted(wrong, key=lambda b: -mean_score[b])[:drop_wrong]:
            keep[b] = False
    assert keep.sum() == B - 2 * (B // G)
    want = loop_outcome(data, scored, reward, algorithm, True, keep=keep)
    want[~keep] = 0.0
    np.testing.assert_allclose(exp.advantages, want, rtol=1e-4, atol=1e-5)
    # dropped rows are out of the loss: no tokens left
    np.testing.assert_array_equal(exp.response_mask, mask * keep[:, None])
    assert float(metrics["prof/dropped_rows"]) == 2 * (B // G)
    assert float(metrics["prof/kept_success_rate"]) == pytest.approx(
        float(np.asarray(data.success)[keep].mean())
    )


def _config(**reward):
    """PPOConfig keyword arguments, built when called (a RewardSpec error must be raised
    inside the test, not when the parameters are collected)."""
    return lambda: dict(
        prm=ModelSpec(path="prm"),
        rollout=RolloutSpec(samples_per_prompt=4),
        reward=RewardSpec(**{"eta": 0.5, **reward}),  # eta: clip_delta, the default method
    )


def _without_prm(**reward):
    return lambda: {**_config(**reward)(), "prm": None}


@pytest.mark.parametrize(
    "algorithm, changes, match",
    [
        ("ppo", _config(use_prm=True, method="min_form"), "min-form return .* GAE sums"),
        ("ppo", _config(prof_remove=2), "PROF filters .* ppo has no groups"),
        ("grpo", _config(use_prm=True, prof_remove=2), "PRM only to choose .*use_prm=true"),
        ("grpo", _without_prm(prof_remove=2), "prof_remove: .* give a `prm`"),
        ("grpo", _config(prof_remove=3), "leave at least 2"),
        ("grpo", _config(prof_remove=0), "prof_remove must be >= 1"),
        (
            "grpo",
            _config(use_prm=True, method="raw", softmin_temperature=0.1),
            "softmin_temperature: only method=pure_softmin",
        ),  # fmt: skip
        (
            "grpo",
            _config(use_prm=True, method="pure_softmin", softmin_temperature=0.0),
            "softmin_temperature must be > 0",
        ),  # fmt: skip
        (
            "grpo",
            _config(use_prm=True, method="min_form", process_normalization="group"),
            "min_form's return is a minimum",
        ),  # fmt: skip
    ],
)
def test_disallowed_combinations_are_config_errors(algorithm, changes, match):
    with pytest.raises(ConfigError, match=match):
        PPOConfig(algorithm=algorithm, **changes())


def test_allowed_combinations_and_defaults():
    softmin = PPOConfig(**_config(use_prm=True, method="pure_softmin")())  # ppo: GAE sums it
    assert softmin.effective_reward.softmin_temperature == 0.1
    assert PPOConfig(**_config()()).effective_reward.softmin_temperature is None
    grpo = PPOConfig(algorithm="grpo", **_config(use_prm=True, method="min_form")())
    assert grpo.effective_reward.process_normalization == "none"
    PPOConfig(algorithm="rloo", **_config(prof_remove=2)())
    # the design variants: min_form and prof are critic-free only, so a critic skips them
    assert {"prm_min_form", "prof"} <= set(GROUP_ONLY_VARIANTS)
    for name in ("prm_pure_softmin", "prm_min_form", "prof"):
        reward = RewardSpec(**{k.split(".")[1]: v for k, v in REWARD_VARIANTS[name].items()})
        config = dataclasses.replace(
            PPOConfig(algorithm="grpo", **_config()()), reward=reward
        )  # validates
        assert config.reward == reward
