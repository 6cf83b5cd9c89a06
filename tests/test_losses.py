"""rlr.losses against plain Python loop references, jitted and eager."""

from __future__ import annotations

import functools
import math

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import rlr


def random_tokens(batch, num_tokens, seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, num_tokens + 1, batch)
    lengths[0] = num_tokens
    mask = (np.arange(num_tokens)[None, :] < lengths[:, None]).astype(np.float32)
    logp = -rng.uniform(0.1, 3.0, (batch, num_tokens)).astype(np.float32)
    old_logp = (logp + rng.normal(0, 0.3, (batch, num_tokens))).astype(np.float32)
    adv = rng.normal(size=(batch, num_tokens)).astype(np.float32)
    return logp, old_logp, adv, mask


def reference_policy_loss(logp, old_logp, adv, mask, clip_eps):
    total, clipped, kl, ratios, count = 0.0, 0.0, 0.0, 0.0, 0
    for idx in np.ndindex(*logp.shape):
        if not mask[idx]:
            continue
        ratio = math.exp(float(logp[idx]) - float(old_logp[idx]))
        a = float(adv[idx])
        unclipped = -a * ratio
        clip = -a * min(max(ratio, 1 - clip_eps), 1 + clip_eps)
        total += max(unclipped, clip)
        clipped += clip > unclipped
        kl += ratio - 1 - math.log(ratio)
        ratios += ratio
        count += 1
    if count == 0:
        return 0.0, {"clip_fraction": 0.0, "approx_kl": 0.0, "ratio_mean": 0.0}
    return total / count, {
        "clip_fraction": clipped / count,
        "approx_kl": kl / count,
        "ratio_mean": ratios / count,
    }


def reference_value_loss(values, old_values, returns, mask, clip_eps):
    total, clipped, count = 0.0, 0.0, 0
    for idx in np.ndindex(*values.shape):
        if not mask[idx]:
            continue
        v, old, ret = float(values[idx]), float(old_values[idx]), float(returns[idx])
        v_clip = old + min(max(v - old, -clip_eps), clip_eps)
        err, err_clip = (v - ret) ** 2, (v_clip - ret) ** 2
        total += max(err, err_clip)
        clipped += err_clip > err
        count += 1
    return 0.5 * total / max(count, 1), {"value_clip_fraction": clipped / max(count, 1)}


class PolicyLossTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(0.2, 0.05)
    def test_matches_loop_reference(self, clip_eps):
        logp, old_logp, adv, mask = random_tokens(5, 9, seed=0)
        fn = self.variant(functools.partial(rlr.ppo_policy_loss, clip_eps=clip_eps))
        loss, metrics = fn(logp, old_logp, adv, mask)
        want_loss, want_metrics = reference_policy_loss(logp, old_logp, adv, mask, clip_eps)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-6)
        self.assertEqual(set(metrics), set(want_metrics))
        for name, value in want_metrics.items():
            np.testing.assert_allclose(metrics[name], value, rtol=1e-5, atol=1e-6, err_msg=name)

    def test_gradient_only_through_unclipped_tokens(self):
        logp, old_logp, adv, mask = random_tokens(3, 6, seed=1)
        grad = jax.grad(lambda lp: rlr.ppo_policy_loss(lp, old_logp, adv, mask)[0])(logp)
        ratio = np.exp(logp - old_logp)
        clipped = np.where(adv > 0, ratio > 1.2, ratio < 0.8)
        np.testing.assert_array_equal(np.asarray(grad)[(mask == 0) | clipped], 0.0)
        live = (mask > 0) & ~clipped
        count = mask.sum()
        np.testing.assert_allclose(np.asarray(grad)[live], (-adv * ratio / count)[live], rtol=1e-5)

    def test_empty_mask_gives_zero(self):
        logp, old_logp, adv, _ = random_tokens(2, 4, seed=2)
        loss, metrics = rlr.ppo_policy_loss(logp, old_logp, adv, np.zeros((2, 4)))
        self.assertEqual(float(loss), 0.0)
        self.assertTrue(all(np.isfinite(float(v)) for v in metrics.values()))


def reference_decoupled_clip_loss(logp, old_logp, adv, mask, low, high):
    """DAPO's clip-higher token loss (arXiv 2503.14476 eq. 10; verl's compute_policy_loss with
    cliprange_low / cliprange_high), token-mean: max(-A r, -A clip(r, 1 - low, 1 + high))."""
    total, clipped, count = 0.0, 0.0, 0
    for idx in np.ndindex(*logp.shape):
        if not mask[idx]:
            continue
        ratio = math.exp(float(logp[idx]) - float(old_logp[idx]))
        a = float(adv[idx])
        pg_losses1 = -a * ratio
        pg_losses2 = -a * min(max(ratio, 1 - low), 1 + high)
        total += max(pg_losses1, pg_losses2)
        clipped += pg_losses2 > pg_losses1
        count += 1
    return total / count, clipped / count


class DecoupledClipTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((0.2, 0.28), (0.1, 0.05))
    def test_matches_loop_reference(self, low, high):
        logp, old_logp, adv, mask = random_tokens(6, 9, seed=4)
        fn = self.variant(
            functools.partial(rlr.ppo_policy_loss, clip_eps_low=low, clip_eps_high=high)
        )
        loss, metrics = fn(logp, old_logp, adv, mask)
        want_loss, want_clipped = reference_decoupled_clip_loss(
            logp, old_logp, adv, mask, low, high
        )
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(metrics["clip_fraction"], want_clipped, rtol=1e-5)
        # the two sides differ here, so the symmetric clip at either value is another loss
        for eps in (low, high):
            symmetric, _ = rlr.ppo_policy_loss(logp, old_logp, adv, mask, clip_eps=eps)
            self.assertNotAlmostEqual(float(loss), float(symmetric), places=5)

    def test_unset_sides_take_clip_eps(self):
        logp, old_logp, adv, mask = random_tokens(4, 7, seed=5)
        plain, _ = rlr.ppo_policy_loss(logp, old_logp, adv, mask, clip_eps=0.1)
        for kwargs in ({}, {"clip_eps_low": 0.1}, {"clip_eps_high": 0.1}):
            loss, _ = rlr.ppo_policy_loss(logp, old_logp, adv, mask, clip_eps=0.1, **kwargs)
            self.assertEqual(float(loss), float(plain))
        want, _ = reference_decoupled_clip_loss(logp, old_logp, adv, mask, 0.1, 0.3)
        loss, _ = rlr.ppo_policy_loss(logp, old_logp, adv, mask, clip_eps=0.1, clip_eps_high=0.3)
        np.testing.assert_allclose(loss, want, rtol=1e-5)


def reference_gspo_loss(logp, old_logp, adv, mask, low, high):
    """verl's compute_policy_loss_gspo (verl/trainer/ppo/core_algos.py) in values, row by row:
    s_i = exp(sum_t mask (logp - old_logp) / max(|y_i|, 1)); per token
    max(-A s_i, -A clip(s_i, 1 - low, 1 + high)); seq-mean-token-mean over rows with a token.
    Also the loss's gradient with respect to logp: of a token whose unclipped term is the
    larger, -A s_i / |y_i| / rows (s_i,t = sg[s_i] pi / sg[pi]), else 0."""
    B, T = logp.shape
    row_losses, clipped, count = [], 0.0, 0
    grad = np.zeros((B, T))
    rows = sum(1 for i in range(B) if mask[i].sum() > 0)
    for i in range(B):
        n = int(mask[i].sum())
        if n == 0:
            continue
        log_s = sum(float(logp[i, t]) - float(old_logp[i, t]) for t in range(T) if mask[i, t])
        s = math.exp(log_s / n)
        total = 0.0
        for t in range(T):
            if not mask[i, t]:
                continue
            a = float(adv[i, t])
            pg_losses1 = -a * s
            pg_losses2 = -a * min(max(s, 1 - low), 1 + high)
            total += max(pg_losses1, pg_losses2)
            clipped += pg_losses2 > pg_losses1
            count += 1
            if not pg_losses2 > pg_losses1:
                grad[i, t] = -a * s / n / rows
        row_losses.append(total / n)
    return sum(row_losses) / rows, clipped / count, grad


class SequenceRatioTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((0.2, 0.2), (3e-4, 4e-4))  # GSPO's paper uses 3e-4 / 4e-4
    def test_matches_verl_transcription(self, low, high):
        logp, old_logp, adv, mask = random_tokens(6, 9, seed=6)
        # GRPO-style advantages: one value per row
        adv = np.repeat(adv[:, :1], adv.shape[1], axis=1)
        fn = self.variant(
            functools.partial(
                rlr.ppo_policy_loss,
                clip_eps_low=low,
                clip_eps_high=high,
                aggregation="sequence_mean",
                importance_ratio="sequence",
            )
        )
        loss, metrics = fn(logp, old_logp, adv, mask)
        want_loss, want_clipped, _ = reference_gspo_loss(logp, old_logp, adv, mask, low, high)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(metrics["clip_fraction"], want_clipped, rtol=1e-5, atol=1e-7)
        self.assertIn("sequence_ratio_mean", metrics)
        token, _ = rlr.ppo_policy_loss(
            logp, old_logp, adv, mask, clip_eps=low, aggregation="sequence_mean"
        )
        self.assertNotAlmostEqual(float(loss), float(token), places=4)

    @parameterized.parameters((0.2, 0.2), (0.05, 0.1))
    def test_gradient_is_gspo_s(self, low, high):
        logp, old_logp, adv, mask = random_tokens(5, 8, seed=7)
        adv = np.repeat(adv[:, :1], adv.shape[1], axis=1)
        grad = jax.grad(
            lambda lp: rlr.ppo_policy_loss(
                lp,
                old_logp,
                adv,
                mask,
                clip_eps_low=low,
                clip_eps_high=high,
                aggregation="sequence_mean",
                importance_ratio="sequence",
            )[0]
        )(logp)
        _, _, want = reference_gspo_loss(logp, old_logp, adv, mask, low, high)
        self.assertTrue(np.any(want != 0))
        np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-5, atol=1e-7)

    def test_unknown_ratio_is_an_error(self):
        logp, old_logp, adv, mask = random_tokens(2, 3, seed=8)
        with self.assertRaisesRegex(ValueError, "importance_ratio must be one of"):
            rlr.ppo_policy_loss(logp, old_logp, adv, mask, importance_ratio="row")


def reference_dual_clip_loss(logp, old_logp, adv, mask, clip_eps, clip_ratio_c):
    """verl's compute_policy_loss (verl/trainer/ppo/core_algos.py), token by token, without
    its clamp of the log-ratio to [-20, 20] (the ratios here are far inside it)."""
    total, lower, count = 0.0, 0.0, 0
    for idx in np.ndindex(*logp.shape):
        if not mask[idx]:
            continue
        ratio = math.exp(float(logp[idx]) - float(old_logp[idx]))
        a = float(adv[idx])
        pg_losses1 = -a * ratio
        pg_losses2 = -a * min(max(ratio, 1 - clip_eps), 1 + clip_eps)  # cliprange_low = high
        clip_pg_losses1 = max(pg_losses1, pg_losses2)
        pg_losses3 = -a * clip_ratio_c
        clip_pg_losses2 = min(pg_losses3, clip_pg_losses1)
        lower += (clip_pg_losses1 > pg_losses3) and a < 0
        total += clip_pg_losses2 if a < 0 else clip_pg_losses1
        count += 1
    return total / count, lower / count


class DualClipTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((0.2, 3.0), (0.1, 1.5))
    def test_matches_verl_transcription(self, clip_eps, c):
        logp, old_logp, adv, mask = random_tokens(6, 9, seed=3)
        # ratios well above c on some tokens, so that the bound binds for negative A
        old_logp = (old_logp - 1.5 * (np.arange(9) % 3 == 0)).astype(np.float32)
        fn = self.variant(functools.partial(rlr.ppo_policy_loss, clip_eps=clip_eps, dual_clip=c))
        loss, metrics = fn(logp, old_logp, adv, mask)
        want_loss, want_lower = reference_dual_clip_loss(logp, old_logp, adv, mask, clip_eps, c)
        self.assertGreater(want_lower, 0.0)  # the test exercises the bound
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(metrics["dual_clip_fraction"], want_lower, rtol=1e-5)
        plain, _ = rlr.ppo_policy_loss(logp, old_logp, adv, mask, clip_eps=clip_eps)
        self.assertLess(float(loss), float(plain))  # the bound only lowers losses

    def test_bounded_tokens_get_no_gradient(self):
        logp = np.log(np.array([[5.0, 5.0, 1.1]], np.float32))
        old_logp = np.zeros((1, 3), np.float32)
        adv = np.array([[-1.0, 1.0, -1.0]], np.float32)
        mask = np.ones((1, 3), np.float32)
        grad = jax.grad(lambda lp: rlr.ppo_policy_loss(lp, old_logp, adv, mask, dual_clip=3.0)[0])
        g = np.asarray(grad(logp))
        # ratio 5 > c with A < 0: the loss is the constant -A c; with A > 0: clipped at 1.2
        np.testing.assert_array_equal(g[0, :2], 0.0)
        np.testing.assert_allclose(g[0, 2], 1.1 / 3, rtol=1e-5)  # -A r / count, r = 1.1

    def test_c_must_exceed_one(self):
        logp, old_logp, adv, mask = random_tokens(2, 3, seed=0)
        with pytest.raises(ValueError, match="dual_clip must be > 1; got 1.0"):
            rlr.ppo_policy_loss(logp, old_logp, adv, mask, dual_clip=1.0)


class ValueLossTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_loop_reference(self):
        rng = np.random.default_rng(3)
        values, old_values, returns = rng.normal(size=(3, 4, 8)).astype(np.float32)
        _, _, _, mask = random_tokens(4, 8, seed=3)
        loss, metrics = self.variant(rlr.ppo_value_loss)(values, old_values, returns, mask)
        want_loss, want_metrics = reference_value_loss(values, old_values, returns, mask, 0.2)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
        np.testing.assert_allclose(
            metrics["value_clip_fraction"], want_metrics["value_clip_fraction"], rtol=1e-6
        )


def reference_log_softmax(logits):
    out = np.zeros(logits.shape, np.float64)
    for idx in np.ndindex(*logits.shape[:-1]):
        row = logits[idx].astype(np.float64)
        top = row.max()
        out[idx] = row - top - math.log(sum(math.exp(z - top) for z in row))
    return out


class TokenMathsTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(jnp.float32, jnp.bfloat16)
    def test_logprobs_and_entropy_match_loop_reference(self, dtype):
        rng = np.random.default_rng(4)
        logits = (rng.normal(size=(2, 5, 11)) * 30).astype(np.float32)  # large logits
        logits = np.asarray(jnp.asarray(logits, dtype).astype(jnp.float32))
        tokens = rng.integers(0, 11, (2, 5)).astype(np.int32)
        ref = reference_log_softmax(logits)
        got = self.variant(rlr.token_logprobs)(jnp.asarray(logits, dtype), tokens)
        self.assertEqual(got.dtype, jnp.float32)
        want = np.take_along_axis(ref, tokens[..., None], -1)[..., 0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
        entropy = self.variant(rlr.entropy_from_logits)(jnp.asarray(logits, dtype))
        want_entropy = -(np.exp(ref) * ref).sum(-1)
        np.testing.assert_allclose(entropy, want_entropy, rtol=1e-4, atol=1e-4)
        self.assertTrue(np.all(np.isfinite(np.asarray(got))))

    def test_errors(self):
        with pytest.raises(ValueError, match=r"logits must have shape \[B, T, V\]"):
            rlr.token_logprobs(jnp.zeros((2, 3)), jnp.zeros((2, 3), jnp.int32))
        with pytest.raises(ValueError, match="tokens must be integer"):
            rlr.token_logprobs(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3)))
        with pytest.raises(ValueError, match="mask has T=4.*logp has T=3"):
            z = jnp.zeros((2, 3))
            rlr.ppo_policy_loss(z, z, z, jnp.ones((2, 4)))
        with pytest.raises(ValueError, match=r"masked_mean: mask must have the shape of x"):
            rlr.masked_mean(jnp.zeros((2, 3)), jnp.ones((3, 2)))


@hypothesis.settings(max_examples=30, deadline=None, derandomize=True)
@hypothesis.given(
    x=st.lists(st.floats(-100, 100, width=32), min_size=6, max_size=6),
    m=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_masked_reductions_never_average_padding(x, m):
    x, m = np.array(x, np.float32).reshape(2, 3), np.array(m).reshape(2, 3)
    picked = [float(v) for v, keep in zip(x.ravel(), m.ravel()) if keep]
    mean = sum(picked) / len(picked) if picked else 0.0
    np.testing.assert_allclose(rlr.masked_sum(x, m), sum(picked), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(rlr.masked_mean(x, m), mean, rtol=1e-5, atol=1e-4)
    var = sum((p - mean) ** 2 for p in picked) / len(picked) if picked else 0.0
    np.testing.assert_allclose(rlr.masked_var(x, m), var, rtol=1e-4, atol=1e-2)
    row_means = rlr.masked_mean(x, m, axis=1)
    for b in range(2):
        row = [float(v) for v, keep in zip(x[b], m[b]) if keep]
        np.testing.assert_allclose(row_means[b], sum(row) / len(row) if row else 0.0, atol=1e-4)
