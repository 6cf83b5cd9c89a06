"""rlr.advantages against a Python loop reference and rlax, jitted and eager."""

from __future__ import annotations

import functools

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax
from absl.testing import parameterized

import rlr


def random_batch(batch, num_tokens, seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, num_tokens + 1, batch)
    lengths[0] = num_tokens
    if batch > 1:
        lengths[1] = 0
    mask = (np.arange(num_tokens)[None, :] < lengths[:, None]).astype(np.float32)
    rewards = rng.normal(size=(batch, num_tokens)).astype(np.float32)
    values = rng.normal(size=(batch, num_tokens)).astype(np.float32)
    bootstrap = rng.normal(size=batch).astype(np.float32)
    return rewards, values, mask, bootstrap


def reference_gae(rewards, values, mask, *, gamma, lam, bootstrap=None):
    """The usual reversed loop over t, one row at a time, with the episode ending at the row's
    last valid token (next value 0, or the bootstrap value)."""
    batch, num_tokens = rewards.shape
    adv = np.zeros((batch, num_tokens))
    ret = np.zeros((batch, num_tokens))
    for b in range(batch):
        length = int(mask[b].sum())
        acc = 0.0
        for t in reversed(range(length)):
            if t + 1 < length:
                next_value = values[b, t + 1]
            else:
                next_value = 0.0 if bootstrap is None else bootstrap[b]
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            acc = delta + gamma * lam * acc
            adv[b, t] = acc
            ret[b, t] = acc + values[b, t]
    return adv, ret


class GaeTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(
        (1.0, 1.0, False, 32), (0.99, 0.95, False, 4), (0.9, 0.5, True, 5), (0.8, 1.0, True, 1)
    )
    def test_matches_loop_reference(self, gamma, lam, use_bootstrap, chunk_size):
        rewards, values, mask, bootstrap = random_batch(6, 13, seed=0)
        values_with_garbage = np.where(mask > 0, values, 1e3)  # values on padding are ignored
        boot = bootstrap if use_bootstrap else None
        fn = self.variant(
            functools.partial(rlr.gae_advantages, gamma=gamma, lam=lam, chunk_size=chunk_size)
        )
        adv, ret = fn(rewards, values_with_garbage, mask, bootstrap_value=boot)
        want_adv, want_ret = reference_gae(
            rewards, values, mask, gamma=gamma, lam=lam, bootstrap=boot
        )
        np.testing.assert_allclose(adv, want_adv, atol=1e-5)
        np.testing.assert_allclose(ret, want_ret, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(adv)[mask == 0], 0.0)
        np.testing.assert_array_equal(np.asarray(ret)[mask == 0], 0.0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_single_token(self):
        fn = self.variant(rlr.gae_advantages)
        adv, ret = fn(jnp.array([[2.0], [3.0]]), jnp.array([[0.5], [0.5]]), jnp.array([[1], [0]]))
        np.testing.assert_allclose(adv, [[1.5], [0.0]])
        np.testing.assert_allclose(ret, [[2.0], [0.0]])

    def test_vmap_over_a_leading_axis(self):
        batches = [random_batch(3, 11, seed) for seed in (3, 4)]
        stacked = [np.stack(parts) for parts in zip(*batches)]

        def gae(r, v, m, boot):
            return rlr.gae_advantages(r, v, m, gamma=0.9, lam=0.8, bootstrap_value=boot)

        fn = jax.jit(jax.vmap(gae))
        adv, _ = fn(*stacked)
        for i, (rewards, values, mask, boot) in enumerate(batches):
            want, _ = reference_gae(rewards, values, mask, gamma=0.9, lam=0.8, bootstrap=boot)
            np.testing.assert_allclose(adv[i], want, atol=1e-5)

    def test_no_retracing(self):
        def gae(r, v, m):
            return rlr.gae_advantages(r, v, m, gamma=0.99, lam=0.95)

        fn = jax.jit(chex.assert_max_traces(gae, n=1))
        for seed in range(3):
            rewards, values, mask, _ = random_batch(4, 9, seed)
            fn(rewards, values, mask)

    def test_errors(self):
        with pytest.raises(ValueError, match=r"values must have shape \[B, T\]"):
            rlr.gae_advantages(jnp.zeros((2, 3)), jnp.zeros(3), jnp.ones((2, 3)))
        with pytest.raises(ValueError, match="bootstrap_value has B=3"):
            rlr.gae_advantages(
                jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.ones((2, 3)), bootstrap_value=jnp.ones(3)
            )
        with pytest.raises(ValueError, match="rewards must be a floating array"):
            rlr.gae_advantages(jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3)), jnp.ones((2, 3)))


GAE_T = 16
# gamma and lam are traced: one compile; chunks of 5 make several chunks over T = 16.
jitted_gae = jax.jit(functools.partial(rlr.gae_advantages, chunk_size=5))


@functools.cache
def rlax_gae():
    return jax.jit(rlax.truncated_generalized_advantage_estimation)


@hypothesis.settings(max_examples=30, deadline=None, derandomize=True)
@hypothesis.given(
    length=st.integers(0, GAE_T),
    gamma=st.floats(0.5, 1.0),
    lam=st.floats(0.0, 1.0),
    truncated=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_agrees_with_rlax_row_by_row(length, gamma, lam, truncated, seed):
    """rlax takes values at times [0, L] and r_t, discount_t at [1, L] (Sutton-Barto): our
    reward t is its r_{t+1}, and V after the last token is the bootstrap value (or 0)."""
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(1, GAE_T)).astype(np.float32)
    values = rng.normal(size=(1, GAE_T)).astype(np.float32)
    mask = (np.arange(GAE_T) < length)[None].astype(np.float32)
    boot = np.float32(rng.normal()) if truncated else np.float32(0.0)
    adv, ret = jitted_gae(
        rewards, values, mask, gamma=gamma, lam=lam, bootstrap_value=np.array([boot])
    )
    if length == 0:
        np.testing.assert_array_equal(adv, 0.0)
        return
    want = rlax_gae()(
        rewards[0, :length],
        np.full(length, gamma, np.float32),
        np.float32(lam),
        np.append(values[0, :length], boot),
    )
    np.testing.assert_allclose(adv[0, :length], want, atol=1e-4)
    np.testing.assert_allclose(ret[0, :length], want + values[0, :length], atol=1e-4)
    np.testing.assert_array_equal(adv[0, length:], 0.0)


class DiscountedReverseCumsumTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((1, 7, 0.9, 3), (3, 10, 1.0, 4), (2, 9, 0.0, 3), (2, 5, 0.7, 64))
    def test_matches_loop_reference(self, batch, num_tokens, decay, chunk_size):
        x = np.random.default_rng(6).normal(size=(batch, num_tokens)).astype(np.float32)
        want = np.zeros((batch, num_tokens))
        for b in range(batch):
            acc = 0.0
            for t in reversed(range(num_tokens)):
                acc = x[b, t] + decay * acc
                want[b, t] = acc
        fn = functools.partial(
            rlr.advantages.discounted_reverse_cumsum, decay=decay, chunk_size=chunk_size
        )
        np.testing.assert_allclose(self.variant(fn)(x), want, atol=1e-5)

    def test_bad_chunk_size(self):
        with pytest.raises(ValueError, match="chunk_size must be >= 1"):
            rlr.advantages.discounted_reverse_cumsum(jnp.zeros((1, 3)), 1.0, chunk_size=0)


class WhitenTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(True, False)
    def test_matches_loop_reference(self, shift_mean):
        rng = np.random.default_rng(1)
        x = rng.normal(3.0, 2.0, (4, 7)).astype(np.float32)
        _, _, mask, _ = random_batch(4, 7, seed=1)
        picked = [float(x[b, t]) for b in range(4) for t in range(7) if mask[b, t]]
        mean = sum(picked) / len(picked)
        var = sum((p - mean) ** 2 for p in picked) / len(picked)
        got = self.variant(functools.partial(rlr.masked_whiten, shift_mean=shift_mean))(x, mask)
        want = (x - mean) / np.sqrt(var + 1e-8) + (0.0 if shift_mean else mean)
        np.testing.assert_allclose(np.asarray(got)[mask > 0], want[mask > 0], rtol=1e-4)
        np.testing.assert_array_equal(np.asarray(got)[mask == 0], 0.0)

    def test_empty_mask_is_finite(self):
        got = rlr.masked_whiten(jnp.ones((2, 3)), jnp.zeros((2, 3)))
        np.testing.assert_array_equal(got, 0.0)


def reference_value_norm(batches, *, beta, eps=1e-5):
    """ReaLHF's ExponentialRunningMeanStd (realhf/impl/model/modules/rms.py) in float64: update
    with each (x, mask) in turn; returns (mean, std) after each update."""
    mean = mean_sq = debias = 0.0
    out = []
    for x, mask in batches:
        factor = mask.sum()
        batch_mean = (x * mask).sum() / factor
        batch_sq_mean = np.square(x * mask).sum() / factor
        mean = beta * mean + batch_mean * (1.0 - beta)
        mean_sq = beta * mean_sq + batch_sq_mean * (1.0 - beta)
        debias = beta * debias + 1.0 - beta
        debiased_mean = mean / max(debias, eps)
        debiased_var = max(mean_sq / max(debias, eps) - debiased_mean**2, 1e-2)
        out.append((debiased_mean, np.sqrt(debiased_var)))
    return out


class ValueNormTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(0.9, 0.99995)
    def test_ema_matches_realhf_loop(self, beta):
        batches = []
        for seed in range(4):
            rewards, _, mask, _ = random_batch(5, 7, seed)
            batches.append((3.0 + 2.0 * rewards.astype(np.float64), mask.astype(np.float64)))
        update = self.variant(functools.partial(rlr.value_norm_update, beta=beta))
        stats = rlr.value_norm_init()
        for (x, mask), (want_mean, want_std) in zip(
            batches, reference_value_norm(batches, beta=beta)
        ):
            stats = update(stats, x.astype(np.float32), mask)
            mean, std = rlr.value_norm_mean_std(stats)
            np.testing.assert_allclose(mean, want_mean, rtol=2e-4)
            np.testing.assert_allclose(std, want_std, rtol=2e-4)
        # after a few updates with beta = 0.9 the statistics are those of the returns (~3, ~2)
        if beta == 0.9:
            self.assertGreater(float(std), 1.0)

    def test_normalize_and_denormalize(self):
        stats = rlr.ValueNormStats(jnp.float32(0.3), jnp.float32(0.2 * 4.25), jnp.float32(0.2))
        mean, std = rlr.value_norm_mean_std(stats)  # mean 1.5, var 4.25 - 2.25 = 2
        np.testing.assert_allclose([mean, std], [1.5, np.sqrt(2.0)], rtol=1e-6)
        x = jnp.array([[1.5, 1.5 + np.sqrt(2.0), 100.0]])
        np.testing.assert_allclose(rlr.normalize_values(x, stats), [[0.0, 1.0, 5.0]], rtol=1e-6)
        np.testing.assert_allclose(
            rlr.denormalize_values(jnp.array([0.0, 1.0]), stats), [1.5, 1.5 + np.sqrt(2.0)]
        )
        # before any update: mean 0 and std 0.1, as ReaLHF starts
        np.testing.assert_allclose(rlr.value_norm_mean_std(rlr.value_norm_init()), [0.0, 0.1])

    def test_empty_mask_is_finite(self):
        stats = rlr.value_norm_update(
            rlr.value_norm_init(), jnp.ones((2, 3)), jnp.zeros((2, 3)), beta=0.9
        )
        self.assertTrue(all(np.isfinite(np.asarray(v)) for v in stats))
