"""Critic-free group-relative advantages (GRPO, Dr. GRPO, RLOO; outcome and process) and the
token-loss aggregations, against NumPy loop references, jitted and eager, with properties."""

from __future__ import annotations

import functools

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest
from absl.testing import parameterized

import rlr


def reference_outcome(rewards, *, scale, leave_one_out, eps=1e-6):
    P, G = rewards.shape
    out = np.zeros((P, G))
    for p in range(P):
        row = [float(x) for x in rewards[p]]
        mean = sum(row) / G
        std = (sum((x - mean) ** 2 for x in row) / (G - 1)) ** 0.5
        for g in range(G):
            base = (sum(row) - row[g]) / (G - 1) if leave_one_out else mean
            out[p, g] = row[g] - base
            if scale == "std":
                out[p, g] /= std + eps
    return out


def reference_process(step_rewards, step_mask, step_end, mask, *, scale, center, eps=1e-6):
    P, G, K = step_rewards.shape
    T = mask.shape[2]
    out = np.zeros((P, G, T))
    for p in range(P):
        real = [(g, k) for g in range(G) for k in range(K) if step_mask[p, g, k]]
        values = [float(step_rewards[p, g, k]) for g, k in real]
        n = len(values)
        mean = sum(values) / n if n else 0.0
        std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
        for g in range(G):
            for t in range(int(mask[p, g].sum())):
                total = 0.0
                for k in range(K):
                    spread = max(values) > min(values) if values else False
                    counts = spread or (scale == "none" and not center)
                    if step_mask[p, g, k] and step_end[p, g, k] >= t and counts:
                        x = float(step_rewards[p, g, k]) - (mean if center else 0.0)
                        total += x / (std + eps) if scale == "std" else x
                out[p, g, t] = total
    return out


def random_groups(P, G, K, T, seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, (P, G))
    mask = (np.arange(T)[None, None] < lengths[..., None]).astype(np.float32)
    steps = rng.integers(0, K + 1, (P, G))
    step_mask = (np.arange(K)[None, None] < steps[..., None]).astype(np.float32)
    step_end = np.zeros((P, G, K), np.int32)
    for p in range(P):
        for g in range(G):
            n = min(steps[p, g], lengths[p, g])
            step_mask[p, g, n:] = 0
            ends = np.sort(rng.choice(lengths[p, g], size=n, replace=False))
            step_end[p, g, :n] = ends
    rewards = rng.normal(size=(P, G, K)).astype(np.float32)
    return rewards, step_mask, step_end, mask


class GroupOutcomeTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(("std", False), ("none", False), ("none", True), ("std", True))
    def test_matches_loop_reference(self, scale, leave_one_out):
        rewards = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
        rewards[1] = 0.7  # a constant group
        fn = functools.partial(
            rlr.group_outcome_advantages, scale=scale, leave_one_out=leave_one_out
        )
        got = self.variant(fn)(rewards)
        want = reference_outcome(rewards, scale=scale, leave_one_out=leave_one_out)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert not np.any(np.isnan(np.asarray(got))) and np.all(np.asarray(got)[1] == 0)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(("std", False), ("none", False), ("none", True), ("std", True))
    def test_kept_samples_form_the_group(self, scale, leave_one_out):
        # PROF's filter: the statistics are those of the kept samples alone (a loop over the
        # kept ones); a dropped sample, a prompt with one kept sample and one whose kept rewards
        # are equal get 0
        rng = np.random.default_rng(1)
        rewards = rng.normal(size=(5, 6)).astype(np.float32)
        keep = rng.random((5, 6)) < 0.6
        keep[0] = [True, False, True, True, False, False]
        keep[1] = [False, False, True, False, False, False]
        rewards[2] = [0.3, 0.3, 9.0, 0.3, 0.3, 0.3]
        keep[2] = [True, True, False, True, False, False]
        keep[3] = True
        fn = functools.partial(
            rlr.group_outcome_advantages, scale=scale, leave_one_out=leave_one_out
        )
        got = np.asarray(self.variant(fn)(rewards, keep=keep))
        want = np.zeros((5, 6))
        for p in range(5):
            kept = [g for g in range(6) if keep[p, g]]
            if len(kept) < 2 or np.ptp(rewards[p, kept]) == 0:
                continue
            want[p, kept] = reference_outcome(
                rewards[p, kept][None], scale=scale, leave_one_out=leave_one_out
            )[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert np.all(got[~keep] == 0) and np.all(got[1] == 0) and np.all(got[2] == 0)
        # every sample kept: the same as no keep mask
        np.testing.assert_allclose(
            np.asarray(fn(rewards, keep=np.ones_like(keep))), np.asarray(fn(rewards)), atol=1e-6
        )

    def test_errors(self):
        with pytest.raises(ValueError, match="G >= 2 samples"):
            rlr.group_outcome_advantages(np.ones((3, 1), np.float32))
        with pytest.raises(ValueError, match="scale must be one of std, none"):
            rlr.group_outcome_advantages(np.ones((3, 2), np.float32), scale="mad")
        with pytest.raises(ValueError, match=r"rewards must have shape \[P, G\]"):
            rlr.group_outcome_advantages(np.ones(3, np.float32))


@hypothesis.settings(max_examples=50, deadline=None)
@hypothesis.given(
    rewards=st.lists(
        st.lists(st.floats(-3, 3, width=32), min_size=4, max_size=4), min_size=1, max_size=5
    )
)
def test_group_outcome_properties(rewards):
    r = np.asarray(rewards, np.float32)
    loo = np.asarray(rlr.group_outcome_advantages(r, scale="none", leave_one_out=True))
    np.testing.assert_allclose(loo.sum(axis=1), 0.0, atol=1e-4)  # RLOO sums to 0 in a group
    grpo = np.asarray(rlr.group_outcome_advantages(r, eps=0.0 + 1e-12))
    for p in range(len(r)):
        if np.ptp(r[p]) > 1e-3:  # unequal rewards: mean 0, sample std 1
            assert abs(grpo[p].mean()) < 1e-4
            assert abs(grpo[p].std(ddof=1) - 1.0) < 1e-3
        elif np.ptp(r[p]) == 0:
            assert np.all(grpo[p] == 0)


class GroupProcessTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(("std", True), ("none", True), ("std", False), ("none", False))
    def test_matches_loop_reference(self, scale, center):
        rewards, step_mask, step_end, mask = random_groups(4, 3, 5, 9, seed=1)
        fn = functools.partial(rlr.group_process_advantages, scale=scale, center=center)
        got = self.variant(fn)(rewards, step_mask, step_end, mask)
        want = reference_process(rewards, step_mask, step_end, mask, scale=scale, center=center)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        assert np.all(np.asarray(got)[mask == 0] == 0)  # 0 on padding

    def test_one_step_at_the_last_token_is_the_outcome_case(self):
        rng = np.random.default_rng(2)
        P, G, T = 3, 4, 6
        lengths = rng.integers(1, T + 1, (P, G))
        mask = (np.arange(T)[None, None] < lengths[..., None]).astype(np.float32)
        rewards = rng.normal(size=(P, G)).astype(np.float32)
        step_end = (lengths - 1)[..., None].astype(np.int32)
        process = rlr.group_process_advantages(
            rewards[..., None], np.ones((P, G, 1), np.float32), step_end, mask
        )
        outcome = rlr.group_outcome_advantages(rewards)
        np.testing.assert_allclose(process, outcome[..., None] * mask, rtol=1e-5, atol=1e-5)

    def test_plain_reward_to_go_keeps_the_clip_and_delta_bounds(self):
        """scale="none", center=False: padding a solution with more steps never raises its
        first-token process advantage under Clip, and under Delta it is x_1 whatever K is."""
        mask = np.ones((1, 2, 12), np.float32)
        for m in range(4):
            x = np.array([[0.9, 0.7] + [0.95] * m + [0.8], [0.6, 0.6, 0.6] + [0.0] * m])
            step_mask = np.array([[1.0] * (3 + m), [1.0] * 3 + [0.0] * m], np.float32)
            ends = np.tile(np.arange(3 + m, dtype=np.int32) * 2 + 1, (2, 1))
            for method, bound in (("clip", 0.0), ("delta", 0.9), ("clip_delta", 0.0)):
                shaped = rlr.shape_process_rewards(x, step_mask, method=method, eta=0.85)
                adv = rlr.group_process_advantages(
                    shaped[None], step_mask[None], ends[None], mask, scale="none", center=False
                )
                first = float(adv[0, 0, 0])
                assert first <= bound + 1e-6, (method, m, first)
                if method == "delta":
                    assert first == pytest.approx(0.9)  # telescoped to x_1

    def test_uncentred_scaling_keeps_clip_rewards_non_positive(self):
        rewards, step_mask, step_end, mask = random_groups(3, 4, 5, 8, seed=3)
        clipped = -np.abs(rewards)  # Clip: every step reward <= 0
        centred = rlr.group_process_advantages(clipped, step_mask, step_end, mask)
        kept = rlr.group_process_advantages(clipped, step_mask, step_end, mask, center=False)
        assert np.max(np.asarray(kept)) <= 0.0
        assert np.max(np.asarray(centred)) > 0.0  # centring gives some steps positive reward

    def test_errors(self):
        ones = np.ones((2, 1, 3), np.float32)
        with pytest.raises(ValueError, match="G >= 2 samples"):
            rlr.group_process_advantages(ones, ones, ones.astype(np.int32), np.ones((2, 1, 4)))
        with pytest.raises(ValueError, match="step_end has P=3"):
            rlr.group_process_advantages(
                np.ones((2, 2, 3), np.float32),
                np.ones((2, 2, 3)),
                np.ones((3, 2, 3), np.int32),
                np.ones((2, 2, 4)),
            )


def reference_aggregate(losses, mask, aggregation):
    B, T = losses.shape
    if aggregation == "token_mean":
        return (losses * mask).sum() / max(mask.sum(), 1)
    if aggregation == "sequence_mean":
        rows = [(losses[b] * mask[b]).sum() / mask[b].sum() for b in range(B) if mask[b].sum()]
        return sum(rows) / max(len(rows), 1)
    return (losses * mask).sum() / (B * T)


class AggregationTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("token_mean", "sequence_mean", "token_sum")
    def test_matches_loop_reference(self, aggregation):
        rng = np.random.default_rng(4)
        losses = rng.normal(size=(5, 7)).astype(np.float32)
        mask = (np.arange(7)[None] < np.array([7, 3, 0, 1, 5])[:, None]).astype(np.float32)
        fn = functools.partial(rlr.aggregate_token_losses, aggregation=aggregation)
        got = self.variant(fn)(losses, mask)
        np.testing.assert_allclose(got, reference_aggregate(losses, mask, aggregation), rtol=1e-5)

    def test_policy_loss_aggregates_the_same_way(self):
        rng = np.random.default_rng(5)
        logp, old, adv = (rng.normal(size=(3, 4)).astype(np.float32) for _ in range(3))
        mask = np.array([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]], np.float32)
        for aggregation in rlr.losses.LOSS_AGGREGATIONS:
            loss, _ = rlr.ppo_policy_loss(logp, old, adv, mask, aggregation=aggregation)
            ratio = np.exp(logp - old)
            per_token = np.maximum(-adv * ratio, -adv * np.clip(ratio, 0.8, 1.2))
            want = reference_aggregate(per_token, mask, aggregation)
            np.testing.assert_allclose(loss, want, rtol=1e-5)
        with pytest.raises(ValueError, match="aggregation must be one of"):
            rlr.aggregate_token_losses(logp, mask, aggregation="mean")
        assert jax.jit(rlr.aggregate_token_losses)(logp, mask) == pytest.approx(
            reference_aggregate(logp, mask, "token_mean"), rel=1e-5
        )
