"""rlr.rewards against plain Python loop references, jitted and eager, plus the paper's claims."""

from __future__ import annotations

import functools

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import rlr

K_MAX = 12
T_MAX = 48


def random_steps(batch, max_steps, seed, min_steps=0):
    """Scores in [0, 1] and a prefix step mask with a random number of real steps per row."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0, 1, (batch, max_steps)).astype(np.float32)
    counts = rng.integers(min_steps, max_steps + 1, batch)
    step_mask = (np.arange(max_steps)[None, :] < counts[:, None]).astype(np.float32)
    return scores, step_mask


def reference_clip(scores, step_mask, *, eta):
    out = np.zeros_like(scores, dtype=np.float64)
    for b in range(scores.shape[0]):
        for k in range(scores.shape[1]):
            if step_mask[b, k]:
                out[b, k] = min(float(scores[b, k]) - eta, 0.0)
    return out


def reference_delta(x, step_mask):
    """Delta of docs/method.md section 5, 1-based: d_k = x_k - x_{k+1} (k <= K-2),
    d_{K-1} = x_{K-1}, d_K = 0."""
    out = np.zeros_like(x, dtype=np.float64)
    for b in range(x.shape[0]):
        num = int(sum(step_mask[b]))
        for k in range(1, num + 1):
            if k <= num - 2:
                out[b, k - 1] = x[b, k - 1] - x[b, k]
            elif k == num - 1:
                out[b, k - 1] = x[b, k - 1]
    return out


def reference_place(values, positions, valid, *, num_tokens):
    out = np.zeros((values.shape[0], num_tokens))
    for b in range(values.shape[0]):
        for k in range(values.shape[1]):
            if valid[b, k] and 0 <= positions[b, k] < num_tokens:
                out[b, positions[b, k]] += values[b, k]
    return out


def reference_kl(logp, ref_logp, estimator):
    out = np.zeros(logp.shape)
    for idx in np.ndindex(*logp.shape):
        d = float(logp[idx]) - float(ref_logp[idx])
        if estimator == "k1":
            out[idx] = d
        elif estimator == "k2":
            out[idx] = 0.5 * d * d
        else:
            out[idx] = np.exp(-d) - 1.0 + d
    return out


def reference_token_rewards(
    success, mask, scores, step_end, step_mask, orm, logp, ref_logp, *, method, alpha, eta,
    orm_weight, kl_coef, estimator,
):  # fmt: skip
    batch, num_tokens = mask.shape
    x = np.asarray(scores, np.float64)
    if method in ("clip", "clip_delta"):
        x = reference_clip(x, step_mask, eta=eta)
    if method in ("delta", "clip_delta"):
        x = reference_delta(x, step_mask)
    if method == "raw":
        x = x * step_mask
    out = {name: np.zeros((batch, num_tokens)) for name in ("success", "process", "outcome", "kl")}
    kl = reference_kl(logp, ref_logp, estimator)
    for b in range(batch):
        valid = [t for t in range(num_tokens) if mask[b, t]]
        if not valid:
            continue
        last = valid[-1]
        for k in range(scores.shape[1]):
            if step_mask[b, k] and mask[b, step_end[b, k]]:
                out["process"][b, step_end[b, k]] += alpha * x[b, k]
        out["success"][b, last] = success[b]
        out["outcome"][b, last] = orm_weight * orm[b]
        for t in valid:
            out["kl"][b, t] = -kl_coef * kl[b, t]
    out["total"] = out["success"] + out["process"] + out["outcome"] + out["kl"]
    return out


def random_episode(batch, num_tokens, max_steps, seed):
    """A batch of right-padded responses with sorted step ends inside each response."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, num_tokens + 1, batch)
    lengths[0] = num_tokens  # a full row
    lengths[-1] = 0  # an empty row
    mask = (np.arange(num_tokens)[None, :] < lengths[:, None]).astype(np.float32)
    scores, step_mask = random_steps(batch, max_steps, seed + 1)
    step_end = np.zeros((batch, max_steps), np.int32)
    for b in range(batch):
        n = int(step_mask[b].sum())
        if lengths[b] == 0:
            step_mask[b] = 0
            continue
        n = min(n, lengths[b])
        step_mask[b, n:] = 0
        ends = np.sort(rng.choice(lengths[b], n, replace=False))
        if n:
            ends[-1] = lengths[b] - 1
        step_end[b, :n] = ends
        step_end[b, n:] = rng.integers(-5, 3 * num_tokens, max_steps - n)  # garbage on padding
    success = rng.integers(0, 2, batch).astype(np.float32)
    orm = rng.uniform(0, 1, batch).astype(np.float32)
    logp = -rng.uniform(0.01, 3, (batch, num_tokens)).astype(np.float32)
    ref_logp = -rng.uniform(0.01, 3, (batch, num_tokens)).astype(np.float32)
    return success, mask, scores, step_end, step_mask, orm, logp, ref_logp


class ShapingTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_clip_matches_loop_reference(self):
        scores, step_mask = random_steps(batch=7, max_steps=9, seed=0)
        got = self.variant(functools.partial(rlr.clip_process_rewards, eta=0.4))(scores, step_mask)
        np.testing.assert_allclose(got, reference_clip(scores, step_mask, eta=0.4), atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_delta_matches_loop_reference(self):
        scores, step_mask = random_steps(batch=16, max_steps=7, seed=1)
        step_mask[0, :] = 1  # a full row
        step_mask[1, :] = 0  # K = 0
        step_mask[2, :] = 0
        step_mask[2, 0] = 1  # K = 1
        got = self.variant(rlr.delta_process_rewards)(scores, step_mask)
        np.testing.assert_allclose(got, reference_delta(scores, step_mask), atol=1e-6)
        np.testing.assert_array_equal(got[1], 0.0)
        np.testing.assert_array_equal(got[2], 0.0)

    def test_delta_worked_example(self):
        x = jnp.array([[0.9, 0.7, 0.8, 0.6, 0.0]])
        m = jnp.array([[1, 1, 1, 1, 0]])
        np.testing.assert_allclose(
            rlr.delta_process_rewards(x, m), [[0.2, -0.1, 0.8, 0.0, 0.0]], atol=1e-6
        )

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("raw", "clip", "delta", "clip_delta")
    def test_shape_matches_loop_reference(self, method):
        scores, step_mask = random_steps(batch=9, max_steps=6, seed=2)
        got = self.variant(functools.partial(rlr.shape_process_rewards, method=method, eta=0.5))(
            scores, step_mask
        )
        want = np.asarray(scores, np.float64) * step_mask
        if method in ("clip", "clip_delta"):
            want = reference_clip(scores, step_mask, eta=0.5)
        if method in ("delta", "clip_delta"):
            want = reference_delta(want, step_mask)
        np.testing.assert_allclose(got, want, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_place_matches_loop_reference_and_ignores_garbage(self):
        rng = np.random.default_rng(3)
        values = rng.normal(size=(5, 8)).astype(np.float32)
        positions = rng.integers(-20, 40, (5, 8)).astype(np.int32)
        valid = rng.integers(0, 2, (5, 8)).astype(np.float32)
        positions[valid == 1] = rng.integers(0, 16, int(valid.sum()))
        positions[0, :2] = 4  # two values on one token add up
        positions[0, 2:] = np.arange(8, 14)
        valid[0, :2] = 1
        got = self.variant(functools.partial(rlr.place_at_tokens, num_tokens=16))(
            values, positions, valid
        )
        want = reference_place(values, positions, valid, num_tokens=16)
        np.testing.assert_allclose(got, want, atol=1e-6)
        self.assertAlmostEqual(float(got[0, 4]), float(values[0, 0] + values[0, 1]), places=5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("k1", "k2", "k3")
    def test_kl_matches_loop_reference(self, estimator):
        rng = np.random.default_rng(4)
        logp = -rng.uniform(0, 4, (3, 11)).astype(np.float32)
        ref_logp = -rng.uniform(0, 4, (3, 11)).astype(np.float32)
        got = self.variant(functools.partial(rlr.kl_penalty, estimator=estimator))(logp, ref_logp)
        np.testing.assert_allclose(got, reference_kl(logp, ref_logp, estimator), rtol=1e-5)
        if estimator != "k1":
            self.assertGreaterEqual(float(jnp.min(got)), 0.0)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(10.0, 0.5)
    def test_clamped_k3_matches_verl_low_var_kl(self, clamp):
        rng = np.random.default_rng(6)
        logp = -rng.uniform(0, 30, (3, 11)).astype(np.float32)
        ref_logp = -rng.uniform(0, 30, (3, 11)).astype(np.float32)
        fn = self.variant(functools.partial(rlr.kl_penalty, estimator="k3", clamp=clamp))
        got = fn(logp, ref_logp)
        # verl's kl_penalty_forward, "low_var_kl": kl = clamp(ref - logp, -20, 20);
        # kld = exp(kl) - kl - 1, clamped to [-10, 10] (here to [-clamp, clamp])
        want = np.zeros(logp.shape)
        for idx in np.ndindex(*logp.shape):
            kl = min(max(float(ref_logp[idx]) - float(logp[idx]), -20.0), 20.0)
            want[idx] = min(max(np.exp(kl) - kl - 1.0, -clamp), clamp)
        self.assertTrue(np.any(want == clamp))  # the clamp binds somewhere
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    def test_clamp_is_for_k3_only(self):
        z = jnp.zeros((1, 2))
        with pytest.raises(ValueError, match="clamp applies to estimator='k3' only"):
            rlr.kl_penalty(z, z, estimator="k1", clamp=10.0)
        with pytest.raises(ValueError, match="must be > 0"):
            rlr.kl_penalty(z, z, estimator="k3", clamp=0.0)


TOKEN_KW = dict(alpha=0.7, eta=0.55, orm_weight=0.3, kl_coef=0.05)


class TokenRewardsTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(
        ("raw", "k1"), ("clip", "k2"), ("delta", "k3"), ("clip_delta", "k1")
    )  # fmt: skip
    def test_matches_loop_reference(self, method, estimator):
        episode = random_episode(batch=6, num_tokens=20, max_steps=5, seed=5)
        fn = functools.partial(rlr.token_rewards, method=method, kl_estimator=estimator, **TOKEN_KW)
        got = self.variant(fn)(*episode)
        want = reference_token_rewards(
            *episode, method=method, estimator=estimator,
            **{k: v for k, v in TOKEN_KW.items()},
        )  # fmt: skip
        self.assertIsInstance(got, rlr.TokenRewards)
        for name in rlr.TokenRewards._fields:
            np.testing.assert_allclose(getattr(got, name), want[name], atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(got.total[-1], 0.0)  # the empty row

    def test_success_only_and_t_equals_one(self):
        got = rlr.token_rewards(jnp.array([1.0, 0.0, 1.0]), jnp.array([[1], [1], [0]]))
        np.testing.assert_allclose(got.total, [[1.0], [0.0], [0.0]])
        np.testing.assert_array_equal(got.process, 0.0)

    def test_no_steps_k_zero(self):
        got = rlr.token_rewards(
            jnp.array([1.0]),
            jnp.ones((1, 4)),
            jnp.zeros((1, 0)),
            jnp.zeros((1, 0), jnp.int32),
            jnp.zeros((1, 0)),
            method="raw",
        )
        np.testing.assert_allclose(got.total, [[0, 0, 0, 1.0]])

    def test_no_retracing(self):
        def rewards(*arrays):
            return rlr.token_rewards(*arrays, method="clip_delta", eta=0.5, kl_coef=0.1)

        fn = jax.jit(chex.assert_max_traces(rewards, n=1))
        for seed in range(3):
            fn(*random_episode(batch=4, num_tokens=10, max_steps=3, seed=seed))

    def test_vmap_over_a_leading_axis(self):
        episodes = [random_episode(batch=3, num_tokens=10, max_steps=4, seed=s) for s in (7, 8)]
        stacked = [np.stack(parts) for parts in zip(*episodes)]
        fn = functools.partial(rlr.token_rewards, method="delta", kl_coef=0.1)
        got = jax.jit(jax.vmap(fn))(*stacked)
        for i, episode in enumerate(episodes):
            want = reference_token_rewards(
                *episode, method="delta", alpha=1.0, eta=0.0, orm_weight=1.0, kl_coef=0.1,
                estimator="k1",
            )  # fmt: skip
            np.testing.assert_allclose(got.total[i], want["total"], atol=1e-5)


class ErrorsTest(parameterized.TestCase):
    def test_unknown_method_lists_valid_names(self):
        with pytest.raises(ValueError, match="raw, clip, delta, clip_delta.*'clipdelta'"):
            rlr.shape_process_rewards(jnp.zeros((1, 2)), jnp.ones((1, 2)), method="clipdelta")
        with pytest.raises(ValueError, match="method must be one of"):
            rlr.token_rewards(jnp.ones(1), jnp.ones((1, 2)), method="Clip")

    def test_unknown_estimator(self):
        with pytest.raises(ValueError, match="k1, k2, k3; got 'k4'"):
            rlr.kl_penalty(jnp.zeros((1, 2)), jnp.zeros((1, 2)), estimator="k4")
        with pytest.raises(ValueError, match="kl_estimator"):
            rlr.token_rewards(jnp.ones(1), jnp.ones((1, 2)), kl_estimator="kl")

    def test_bad_rank_names_the_argument(self):
        with pytest.raises(ValueError, match=r"step_mask must have shape \[B, K\]"):
            rlr.clip_process_rewards(jnp.zeros((2, 3)), jnp.zeros(3), eta=0.1)
        with pytest.raises(ValueError, match="success must have shape"):
            rlr.token_rewards(jnp.ones((2, 1)), jnp.ones((2, 5)))

    def test_mismatched_sizes_name_both_arguments(self):
        with pytest.raises(ValueError, match="ref_logp has T=4.*logp has T=5"):
            rlr.kl_penalty(jnp.zeros((2, 5)), jnp.zeros((2, 4)))
        with pytest.raises(ValueError, match="mask has B=3.*success has B=2"):
            rlr.token_rewards(jnp.ones(2), jnp.ones((3, 5)))

    def test_incomplete_arguments(self):
        with pytest.raises(ValueError, match="go together"):
            rlr.token_rewards(jnp.ones(1), jnp.ones((1, 5)), step_scores=jnp.zeros((1, 2)))
        with pytest.raises(ValueError, match="logp and ref_logp"):
            rlr.token_rewards(jnp.ones(1), jnp.ones((1, 5)), logp=jnp.zeros((1, 5)))
        with pytest.raises(ValueError, match="step scores need method="):
            z = jnp.zeros((1, 2))
            rlr.token_rewards(jnp.ones(1), jnp.ones((1, 5)), z, z.astype(jnp.int32), z)
        with pytest.raises(ValueError, match="kl_coef=0.1 needs logp"):
            rlr.token_rewards(jnp.ones(1), jnp.ones((1, 5)), kl_coef=0.1)

    def test_float_positions_rejected(self):
        with pytest.raises(ValueError, match="positions must be integer"):
            rlr.place_at_tokens(
                jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.ones((1, 2)), num_tokens=3
            )


# Properties on one fixed padded shape, so one compiled function serves every example.
@functools.cache
def jitted_returns(method):
    """Return-to-go at every step's end token (gamma = 1) for one trajectory, via rlr."""

    def returns(scores, num_steps, success, alpha, eta):
        step_mask = (jnp.arange(K_MAX) < num_steps).astype(jnp.float32)[None]
        step_end = (2 * jnp.arange(K_MAX) + 1)[None]
        mask = (jnp.arange(T_MAX) < 2 * num_steps + 1).astype(jnp.float32)[None]
        tr = rlr.token_rewards(
            success[None], mask, scores[None], step_end, step_mask, method=method, alpha=alpha,
            eta=eta,
        )  # fmt: skip
        _, ret = rlr.gae_advantages(tr.total, jnp.zeros_like(mask), mask)
        token_return_to_go = ret[0]
        # The return-to-go from the start of step k: rewards at or after step k's first token.
        step_start = jnp.concatenate([jnp.zeros(1, jnp.int32), step_end[0, :-1] + 1])
        return token_return_to_go[step_start], tr.process[0]

    return jax.jit(returns)


score_lists = st.lists(st.floats(0.0, 1.0, width=32), min_size=0, max_size=K_MAX // 2)
settings = hypothesis.settings(max_examples=25, deadline=None, derandomize=True)


@settings
@hypothesis.given(scores=score_lists, eta=st.floats(0.0, 1.0))
def test_clip_rewards_are_never_positive(scores, eta):
    x = np.zeros((1, K_MAX), np.float32)
    x[0, : len(scores)] = scores
    m = (np.arange(K_MAX) < len(scores))[None].astype(np.float32)
    assert float(jnp.max(rlr.clip_process_rewards(x, m, eta=eta))) <= 0.0


@settings
@hypothesis.given(
    scores=score_lists,
    filler=st.lists(st.floats(0.0, 1.0, width=32), max_size=K_MAX // 2 - 1),
    success=st.sampled_from([0.0, 1.0]),
    alpha=st.floats(0.1, 2.0),
)
def test_delta_return_is_alpha_x1_plus_success_for_any_filler(scores, filler, success, alpha):
    """Inserting filler steps before the final-answer step never changes the Delta return."""
    for steps in (scores, scores[:-1] + filler + scores[-1:] if scores else filler):
        x = np.zeros(K_MAX, np.float32)
        x[: len(steps)] = steps
        starts, _ = jitted_returns("delta")(x, len(steps), np.float32(success), alpha, 0.0)
        starts = np.asarray(starts)
        total = alpha * steps[0] + success if len(steps) >= 2 else success
        np.testing.assert_allclose(starts[0], total, atol=1e-5)
        # Return-to-go from step k (1-based, k <= K-1) is alpha * x_k + success.
        for k in range(len(steps) - 1):
            np.testing.assert_allclose(starts[k], alpha * steps[k] + success, atol=1e-5)


@settings
@hypothesis.given(
    scores=score_lists,
    success=st.sampled_from([0.0, 1.0]),
    alpha=st.floats(0.0, 2.0),
    eta=st.floats(0.0, 1.0),
)
def test_clip_delta_return_never_exceeds_success(scores, success, alpha, eta):
    x = np.zeros(K_MAX, np.float32)
    x[: len(scores)] = scores
    starts, _ = jitted_returns("clip_delta")(x, len(scores), np.float32(success), alpha, eta)
    assert float(starts[0]) <= success + 1e-6
    if len(scores) >= 2:
        np.testing.assert_allclose(
            starts[0], alpha * min(scores[0] - eta, 0.0) + success, atol=1e-5
        )


PLACE_T = 24
jitted_place = jax.jit(functools.partial(rlr.place_at_tokens, num_tokens=PLACE_T))


@settings
@hypothesis.given(data=st.data(), values=st.lists(st.floats(-5, 5, width=32), max_size=8))
def test_placement_puts_each_reward_on_its_step_end_only(data, values):
    ends = sorted(data.draw(st.lists(st.integers(0, PLACE_T - 1), min_size=len(values),
                                     max_size=len(values), unique=True)))  # fmt: skip
    pad = 9 - len(values)
    v = np.array([values + [1.0] * pad], np.float32)
    garbage = data.draw(st.lists(st.integers(-100, 100), min_size=pad, max_size=pad))
    pos = np.array([ends + garbage], np.int32)
    valid = np.array([[1.0] * len(ends) + [0.0] * pad], np.float32)
    got = np.asarray(jitted_place(v, pos, valid))[0]
    for t in range(PLACE_T):
        want = values[ends.index(t)] if t in ends else 0.0
        np.testing.assert_allclose(got[t], want, atol=1e-6)


def reference_overlong_penalty(lengths, max_length, buffer, factor):
    """DAPO (arXiv 2503.14476) eq. 13, case by case, times verl's penalty_factor."""
    out = []
    for length in lengths:
        if length <= max_length - buffer:
            r = 0.0
        elif length <= max_length:
            r = ((max_length - buffer) - length) / buffer
        else:
            r = -1.0
        out.append(factor * r)
    return np.array(out, np.float32)


class OverlongPenaltyTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((20, 4, 1.0), (20, 20, 0.5), (7, 1, 2.0))
    def test_matches_paper_formula(self, max_length, buffer, factor):
        lengths = np.arange(0, max_length + 3, dtype=np.int32)
        fn = self.variant(
            functools.partial(
                rlr.overlong_penalty, max_length=max_length, buffer=buffer, factor=factor
            )
        )
        got = fn(lengths)
        want = reference_overlong_penalty(lengths, max_length, buffer, factor)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        self.assertEqual(float(got[max_length]), -factor)  # the full budget pays the factor
        self.assertEqual(float(got[max_length - buffer]), 0.0)  # the ramp starts after it

    def test_buffer_must_fit_the_budget(self):
        for buffer in (0, 11):
            with self.assertRaisesRegex(ValueError, "buffer must be in 1..max_length=10"):
                rlr.overlong_penalty(np.array([3]), max_length=10, buffer=buffer)
