"""rlr.process_designs against NumPy loop references transcribed from the authors' code
(PURE, PRIME, PROF-GRPO), jitted and eager, plus what each design does when steps are added."""

from __future__ import annotations

import math
import random

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest
from absl.testing import parameterized
from test_rewards import random_steps

import rlr
from rlr import process_designs as pd


def random_tokens(shape, seed, min_len=0):
    """A prefix mask over the last axis with a random length per row."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, shape[-1] + 1, shape[:-1])
    return (np.arange(shape[-1]) < lengths[..., None]).astype(np.float32)


# ---- references, transcribed loop by loop ---------------------------------------------------


def reference_softmin(scores, step_mask, *, temperature, score_kind):
    """PURE openrlhf/utils/utils.py turn_process_reward_logits_to_reward, per row."""
    out = np.zeros(scores.shape)
    for b in range(scores.shape[0]):
        idx = [k for k in range(scores.shape[1]) if step_mask[b, k]]
        if not idx:
            continue
        pr = np.array([float(scores[b, k]) for k in idx])
        if score_kind == "probability":
            pr = 2 * pr - 1
        w = np.exp(-(pr - pr.min()) / temperature)
        w = w / w.sum()
        for i, k in enumerate(idx):
            out[b, k] = w[i] * pr[i]
    return out


def reference_strict_min(rewards, eos_mask):
    """PURE verl branch core_algos.compute_rloo_outcome_advantage, 'min' returns."""
    returns = (rewards * eos_mask).astype(np.float64)
    for col in range(returns.shape[1] - 2, -1, -1):
        returns[:, col] = np.minimum(returns[:, col], returns[:, col + 1])
    return returns


def reference_pure_advantages(
    step_rewards, step_end, step_mask, mask, success, *, baseline, coef, extra, mask_ends
):
    """PURE experience_maker.process_experiences + make_experience_list (rloo), per prompt."""
    P, G, K = step_rewards.shape
    T = mask.shape[2]
    out = np.zeros((P, G, T))
    for p in range(P):
        proc = np.zeros((G, T))
        reward_mask = np.zeros((G, T), bool)
        ntok = np.zeros((G, K))
        for g in range(G):
            prev = -1
            for k in range(K):
                if step_mask[p, g, k]:
                    proc[g, step_end[p, g, k]] += step_rewards[p, g, k]
                    reward_mask[g, step_end[p, g, k]] = True
                    ntok[g, k] = step_end[p, g, k] - prev - 1
                    prev = step_end[p, g, k]
        outcome = proc.sum(-1)
        lengths = mask[p].sum(-1)
        if baseline == "step":
            num_steps = step_mask[p].sum(-1)
            avg = outcome / num_steps
            base = (avg.sum() - avg) / (G - 1)
            proc = np.where(reward_mask, proc - base[:, None], 0.0)
        else:
            per_token = (outcome.sum() - outcome) / (lengths.sum() - lengths)
            for g in range(G):
                for k in range(K):
                    if step_mask[p, g, k]:
                        proc[g, step_end[p, g, k]] -= per_token[g] * ntok[g, k]
        vr = success[p] - 1
        vr = vr - (vr.sum() - vr) / (G - 1)
        for g in range(G):
            eos = int(lengths[g]) - 1
            proc[g, eos] += vr[g] * coef
            reward_mask[g, eos] = True
        reward = proc + extra[p]
        returns = np.flip(np.cumsum(np.flip(reward, 1), 1), 1).copy()
        if mask_ends:
            returns[reward_mask] = 0
        out[p] = returns * mask[p]
    return out


def reference_prime_rloo(token_rewards, outcome, mask, *, gamma_rm, gamma_v):
    """PRIME core_algos.compute_rloo_returns on flattened [P*G, T] rows, then masked_whiten."""
    P, G, T = token_rewards.shape
    n = G
    rm = token_rewards.reshape(P * G, T).astype(np.float64)
    eos = mask.reshape(P * G, T).astype(bool)
    gt = np.zeros((P * G, T))
    lens = eos.sum(-1)
    gt_mask = np.zeros((P * G, T), bool)
    for i in range(P * G):
        gt[i, lens[i] - 1] += outcome.reshape(-1)[i]
        gt_mask[i, lens[i] - 1] = True
    discount_rewards = []
    for v, reward_mask, gamma in ((rm, eos, gamma_rm), (gt, gt_mask, gamma_v)):
        r = v.copy()
        r[~reward_mask] = 0
        for start in range(0, r.shape[0], n):
            means = [r[pos][reward_mask[pos]].mean() for pos in range(start, start + n)]
            baseline = sum(means) / (n - 1)
            for pos in range(start, start + n):
                r[pos][reward_mask[pos]] = r[pos][reward_mask[pos]] * (n / (n - 1)) - baseline
        d = np.zeros_like(r)
        for step in reversed(range(T)):
            d[:, step] = r[:, step] + (gamma * d[:, step + 1] if step < T - 1 else 0.0)
        discount_rewards.append(d)
    returns = sum(discount_rewards)
    m = eos.astype(np.float64)
    mean = (returns * m).sum() / m.sum()
    var = (((returns - mean) ** 2) * m).sum() / m.sum() * m.sum() / (m.sum() - 1)
    adv = (returns - mean) / np.sqrt(var + 1e-8)
    return (adv * m).reshape(P, G, T), (returns * m).reshape(P, G, T)


def reference_prof_filter(correct, mean_score, num_steps, *, n_remove_per_group, coef):
    """PROF-GRPO prof_ray_trainer.filter_trajectories, consistency from
    compute_verify_step_level_score (scores centred on the batch mean of all steps)."""
    P, G = correct.shape
    batch_mean = 0.37  # any centre: it shifts every sample of one correctness alike
    kept = np.zeros((P, G), bool)
    for p in range(P):
        items = []
        for g in range(G):
            sign = 2 * float(correct[p, g]) - 1
            ic = 2 * (float(mean_score[p, g]) - batch_mean) * sign
            prm_critic = ic - coef * ((num_steps[p, g] < 2) or (num_steps[p, g] > 30))
            items.append((g, prm_critic, int(correct[p, g])))
        n_remove = min(n_remove_per_group, G)
        pos = [it for it in items if it[2] == 1]
        neg = [it for it in items if it[2] == 0]
        delta = len(pos) - len(neg)
        n_pos_to_remove = min(n_remove, round((delta + n_remove) / 2))
        kept_pos, kept_neg = list(pos), list(neg)
        if n_pos_to_remove > 0:
            pos.sort(key=lambda x: x[1])
            num = min(n_pos_to_remove, len(pos))
            gone = {it[0] for it in pos[:num]}
            kept_pos = [it for it in pos if it[0] not in gone]
            n_neg = n_remove - num
            if n_neg > 0 and neg:
                neg.sort(key=lambda x: x[1])
                gone = {it[0] for it in neg[: min(n_neg, len(neg))]}
                kept_neg = [it for it in neg if it[0] not in gone]
        elif n_remove > 0 and neg:
            neg.sort(key=lambda x: x[1])
            gone = {it[0] for it in neg[: min(n_remove, len(neg))]}
            kept_neg = [it for it in neg if it[0] not in gone]
        for it in kept_pos + kept_neg:
            kept[p, it[0]] = True
    return kept


# ---- PURE -------------------------------------------------------------------------------------


class PureTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(temperature=[0.1, 1.0], score_kind=["probability", "signed"])
    def test_softmin_matches_the_authors_loop(self, temperature, score_kind):
        scores, step_mask = random_steps(5, 7, seed=1)
        if score_kind == "signed":
            scores = 2 * scores - 1
        fn = self.variant(
            lambda s, m: pd.pure_softmin_step_rewards(
                s, m, temperature=temperature, score_kind=score_kind
            )
        )
        got = fn(scores, step_mask)
        want = reference_softmin(scores, step_mask, temperature=temperature, score_kind=score_kind)
        np.testing.assert_allclose(got, want, atol=1e-5)

    def test_softmin_row_without_steps_is_zero(self):
        got = pd.pure_softmin_step_rewards(np.ones((2, 3), np.float32), np.zeros((2, 3)))
        assert np.all(np.asarray(got) == 0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_strict_min_matches_the_authors_loop_with_a_full_mask(self):
        rng = np.random.default_rng(2)
        rewards = rng.normal(size=(4, 9)).astype(np.float32)
        eos = random_tokens((4, 9), seed=3)
        rewards = rewards * (rng.uniform(size=(4, 9)) < 0.4)  # rewards on a few tokens only
        full = np.ones_like(eos)
        got = self.variant(pd.min_form_returns)(rewards * eos, full) * eos
        np.testing.assert_allclose(got, reference_strict_min(rewards, eos) * eos, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_min_form_with_a_reward_mask_is_the_step_min_spread_over_tokens(self):
        scores, step_mask = random_steps(4, 5, seed=4, min_steps=1)
        tokens_per_step = 3
        step_end = np.broadcast_to(np.arange(5) * tokens_per_step + 2, (4, 5)).astype(np.int32)
        mask = np.zeros((4, 15), np.float32)
        for b in range(4):
            mask[b, : int(step_mask[b].sum()) * tokens_per_step] = 1
        rewards = np.asarray(rlr.place_at_tokens(scores, step_end, step_mask, num_tokens=15))
        ones = np.ones_like(scores)
        ends = np.asarray(rlr.place_at_tokens(ones, step_end, step_mask, num_tokens=15))
        got = self.variant(lambda r, m, e: pd.min_form_returns(r, m, reward_mask=e))(
            rewards, mask, ends
        )
        steps = np.asarray(pd.min_form_step_returns(scores, step_mask))
        want = np.repeat(steps, tokens_per_step, axis=1) * mask
        np.testing.assert_allclose(got, want, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(("token", True), ("step", True), ("token", False))
    def test_advantages_match_the_authors_loop(self, baseline, mask_ends):
        P, G, K, T = 2, 3, 4, 16
        rng = np.random.default_rng(5)
        step_mask = np.zeros((P, G, K), np.float32)
        step_end = np.zeros((P, G, K), np.int32)
        mask = np.zeros((P, G, T), np.float32)
        for p in range(P):
            for g in range(G):
                n = int(rng.integers(1, K + 1))
                lengths = rng.integers(1, 5, n)
                step_end[p, g, :n] = np.cumsum(lengths) - 1
                step_end[p, g, n:] = step_end[p, g, n - 1]
                step_mask[p, g, :n] = 1
                mask[p, g, : step_end[p, g, n - 1] + 1] = 1
        scores = rng.uniform(size=(P, G, K)).astype(np.float32)
        step_rewards = np.asarray(
            pd.pure_softmin_step_rewards(scores.reshape(-1, K), step_mask.reshape(-1, K))
        ).reshape(P, G, K)
        success = rng.integers(0, 2, (P, G)).astype(np.float32)
        extra = (rng.normal(size=(P, G, T)) * 0.01 * mask).astype(np.float32)
        fn = self.variant(
            lambda *a: pd.pure_advantages(
                *a[:5],
                baseline=baseline,
                verifiable_coef=0.5,
                extra_rewards=a[5],
                mask_step_ends=mask_ends,
            )  # fmt: skip
        )
        got = fn(step_rewards, step_end, step_mask, mask, success, extra)
        want = reference_pure_advantages(
            step_rewards, step_end, step_mask, mask, success,
            baseline=baseline, coef=0.5, extra=extra, mask_ends=mask_ends,
        )  # fmt: skip
        np.testing.assert_allclose(got, want, atol=1e-5)

    def test_errors(self):
        with pytest.raises(ValueError, match="score_kind"):
            pd.pure_softmin_step_rewards(
                np.ones((1, 2), np.float32), np.ones((1, 2)), score_kind="x"
            )
        with pytest.raises(ValueError, match="must have shape"):
            pd.min_form_step_returns(np.ones((2,), np.float32), np.ones((2,)))
        with pytest.raises(ValueError, match="G >= 2"):
            pd.pure_advantages(
                np.ones((1, 1, 2), np.float32), np.zeros((1, 1, 2), np.int32),
                np.ones((1, 1, 2)), np.ones((1, 1, 3)), np.ones((1, 1)),
            )  # fmt: skip


def _with_filler(scores, filler, at):
    return np.array(list(scores[:at]) + [filler] + list(scores[at:]), np.float32)


def _one_row(values):
    return values[None, :], np.ones((1, len(values)), np.float32)


score_lists = st.lists(st.floats(0.0, 1.0, width=32), min_size=1, max_size=8)


@hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
@hypothesis.given(scores=score_lists, filler=st.floats(0.0, 1.0, width=32), data=st.data())
def test_softmin_return_gains_at_most_t_log_k_from_a_filler(scores, filler, data):
    """The softmin return R lies in [min PR, min PR + T log K]; an added step can only lower
    the min, so R(with filler) - R(without) <= T log(K + 1), whatever the filler's score."""
    temperature = 0.1
    at = data.draw(st.integers(0, len(scores)))
    base = np.asarray(pd.pure_softmin_step_rewards(*_one_row(np.array(scores, np.float32))))
    padded = _with_filler(scores, filler, at)
    more = np.asarray(pd.pure_softmin_step_rewards(*_one_row(padded)))
    pr = 2 * np.array(scores) - 1
    assert pr.min() - 1e-5 <= base.sum() <= pr.min() + temperature * math.log(len(scores)) + 1e-5
    assert more.sum() - base.sum() <= temperature * math.log(len(scores) + 1) + 1e-5


@hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
@hypothesis.given(scores=score_lists, filler=st.floats(-1.0, 1.0, width=32), data=st.data())
def test_exact_min_form_return_never_rises_with_an_added_step(scores, filler, data):
    at = data.draw(st.integers(0, len(scores)))
    base = np.asarray(pd.min_form_step_returns(*_one_row(np.array(scores, np.float32))))
    more = np.asarray(pd.min_form_step_returns(*_one_row(_with_filler(scores, filler, at))))
    assert more[0, 0] <= base[0, 0] + 1e-7
    # and every original step's return-to-go is at most what it was
    original = [k if k < at else k + 1 for k in range(len(scores))]
    assert np.all(more[0, original] <= base[0] + 1e-7)


# ---- PRIME ------------------------------------------------------------------------------------


class PrimeTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("none", "batch_norm")
    def test_token_rewards(self, normalization):
        rng = np.random.default_rng(6)
        logp_phi, logp_ref = rng.normal(size=(2, 3, 7)).astype(np.float32)
        mask = random_tokens((3, 7), seed=7)
        got = self.variant(
            lambda a, b, m: pd.prime_token_rewards(a, b, m, beta=0.05, normalization=normalization)
        )(logp_phi, logp_ref, mask)
        # dp_prime.compute_implicit_reward (token granularity): q on valid tokens
        q = np.zeros((3, 7))
        for i in range(3):
            for t in range(int(mask[i].sum())):
                q[i, t] = 0.05 * (logp_phi[i, t] - logp_ref[i, t])
        if normalization == "batch_norm":  # dp_prime.update_policy, prime_norm="batch_norm"
            to_go = np.flip(np.cumsum(np.flip(q, 1), 1), 1)
            q = q / (np.abs(to_go).max() + 1e-6)
        np.testing.assert_allclose(got, q, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_ce_loss_matches_torch_bce(self):
        rng = np.random.default_rng(8)
        logp_phi, logp_ref = rng.normal(size=(2, 4, 6)).astype(np.float32) * 3
        mask = random_tokens((4, 6), seed=9, min_len=1)
        labels = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
        got = self.variant(lambda a, b, m, y: pd.prime_implicit_prm_loss(a, b, m, y, beta=0.5))(
            logp_phi, logp_ref, mask, labels
        )
        # core_algos.compute_ce_dpo_loss_rm: sigmoid(beta * sum(q * mask)), torch BCE (mean)
        z = 0.5 * ((logp_phi - logp_ref) * mask).sum(1).astype(np.float64)
        p = 1 / (1 + np.exp(-z))
        want = -np.mean(
            labels * np.maximum(np.log(p), -100) + (1 - labels) * np.maximum(np.log(1 - p), -100)
        )
        np.testing.assert_allclose(got, want, rtol=1e-5)

    def test_ce_loss_is_finite_for_large_margins_and_has_gradients(self):
        mask = np.ones((2, 3), np.float32)
        labels = np.array([0.0, 1.0], np.float32)
        phi = np.array([[500.0, 0, 0], [-500.0, 0, 0]], np.float32)
        loss = pd.prime_implicit_prm_loss(phi, np.zeros_like(phi), mask, labels, beta=1.0)
        assert float(loss) == pytest.approx(100.0)  # torch's clamp of log at -100
        grad = jax.grad(
            lambda x: pd.prime_implicit_prm_loss(x, np.zeros_like(phi), mask, labels, beta=1.0)
        )(phi * 0.001)
        assert np.all(np.isfinite(grad)) and np.any(grad != 0)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((1.0, 1.0), (0.9, 0.5))
    def test_advantages_match_compute_rloo_returns(self, gamma_rm, gamma_v):
        P, G, T = 2, 4, 8
        rng = np.random.default_rng(10)
        token_rewards = rng.normal(size=(P, G, T)).astype(np.float32)
        mask = random_tokens((P, G, T), seed=11, min_len=1)
        token_rewards = token_rewards * mask
        outcome = rng.integers(0, 2, (P, G)).astype(np.float32)
        fn = self.variant(
            lambda r, o, m: pd.prime_advantages(
                r, o, m, process_gamma=gamma_rm, outcome_gamma=gamma_v
            )
        )
        adv, ret = fn(token_rewards, outcome, mask)
        want_adv, want_ret = reference_prime_rloo(
            token_rewards, outcome, mask, gamma_rm=gamma_rm, gamma_v=gamma_v
        )
        np.testing.assert_allclose(ret, want_ret, atol=1e-5)
        np.testing.assert_allclose(adv, want_adv, atol=1e-4)

    def test_group_sums_of_the_baselined_rewards(self):
        """Outcome: exact RLOO, so the group's baselined outcomes sum to 0. Process: each
        sample's mean baselined token reward is m_i - mean_{j != i} m_j, which sums to 0 too."""
        rng = np.random.default_rng(12)
        mask = random_tokens((3, 5, 9), seed=13, min_len=1)
        rewards = rng.normal(size=(3, 5, 9)).astype(np.float32) * mask
        outcome = rng.uniform(size=(3, 5)).astype(np.float32)
        _, only_outcome = pd.prime_advantages(0 * rewards, outcome, mask, whiten=False)
        np.testing.assert_allclose(np.asarray(only_outcome)[:, :, 0].sum(1), 0, atol=1e-5)
        _, only_process = pd.prime_advantages(rewards, 0 * outcome, mask, whiten=False)
        first = np.asarray(only_process)[:, :, 0]  # = n_i * (baselined mean of sample i)
        np.testing.assert_allclose((first / mask.sum(2)).sum(1), 0, atol=1e-5)


@hypothesis.settings(max_examples=30, deadline=None, derandomize=True)
@hypothesis.given(
    length=st.integers(1, 8),
    extra=st.integers(1, 4),
    filler=st.floats(-2.0, 2.0, width=32),
)
def test_prime_process_return_of_a_padded_sample_grows_with_its_filler_rewards(
    length, extra, filler
):
    """What holds for PRIME: the implicit PRM pays every token, so the gamma = 1 process
    return-to-go at the first token (before any baseline) is the sum of the token rewards and
    moves by exactly the fillers' summed reward -- no bound; what limits padding is the PRM's
    training (a filler's log-ratio tends to 0 when it does not predict the outcome) and the
    group baseline, which a padded sample's own mean feeds."""
    rng = np.random.default_rng(length * 10 + extra)
    base = rng.normal(size=length).astype(np.float32)
    padded = np.concatenate([base[:-1], np.full(extra, filler, np.float32), base[-1:]])
    width = length + extra
    rows = np.zeros((2, width), np.float32)
    mask = np.zeros((2, width), np.float32)
    rows[0, :length], mask[0, :length] = base, 1
    rows[1], mask[1] = padded, 1
    r = np.asarray(pd.prime_token_rewards(rows, np.zeros_like(rows), mask, beta=1.0))
    to_go = np.flip(np.cumsum(np.flip(r, 1), 1), 1)
    assert to_go[1, 0] - to_go[0, 0] == pytest.approx(extra * filler, abs=1e-4)


# ---- PROF -------------------------------------------------------------------------------------


class ProfTest(parameterized.TestCase):
    def test_the_papers_figure(self):
        # n = 8, 5 correct and 3 incorrect, remove 4: 3 correct (lowest) and 1 incorrect
        # (highest) go, 2 and 2 stay.
        correct = np.array([[1, 1, 1, 1, 1, 0, 0, 0]], bool)
        score = np.array([[0.9, 0.2, 0.8, 0.5, 0.3, 0.4, 0.9, 0.1]], np.float32)
        keep = np.asarray(pd.prof_keep_mask(correct, score, num_remove=4))
        np.testing.assert_array_equal(keep[0], [1, 0, 1, 0, 0, 1, 0, 1])

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(num_remove=[0, 1, 3, 4, 6, 9], penalty=[0.0, 10.0])
    def test_matches_filter_trajectories(self, num_remove, penalty):
        rng = np.random.default_rng(num_remove * 7 + int(penalty))
        P, G = 12, 6
        correct = rng.uniform(size=(P, G)) < rng.uniform(size=(P, 1))
        # coarse scores so that ties happen; the stable sort removes the lower index first
        score = (rng.integers(0, 4, (P, G)) / 4).astype(np.float32)
        num_steps = rng.integers(0, 40, (P, G)).astype(np.int32)
        fn = self.variant(
            lambda c, s, n: pd.prof_keep_mask(
                c, s, num_remove=num_remove, num_steps=n, length_penalty=penalty
            )
        )
        got = np.asarray(fn(correct, score, num_steps))
        want = reference_prof_filter(
            correct, score, num_steps, n_remove_per_group=num_remove, coef=penalty
        )
        np.testing.assert_array_equal(got, want)

    def test_round_half_to_even(self):
        # 3 correct, 2 incorrect, remove 2: round((1 + 2) / 2) = round(1.5) = 2 correct go
        correct = np.array([[1, 1, 1, 0, 0]], bool)
        keep = np.asarray(pd.prof_keep_mask(correct, np.zeros((1, 5), np.float32), num_remove=2))
        np.testing.assert_array_equal(keep[0], [0, 0, 1, 1, 1])
        # 4 correct, 1 incorrect, remove 2: round(2.5) = 2 correct go as well
        correct = np.array([[1, 1, 1, 1, 0]], bool)
        keep = np.asarray(pd.prof_keep_mask(correct, np.zeros((1, 5), np.float32), num_remove=2))
        np.testing.assert_array_equal(keep[0], [0, 0, 1, 1, 1])


@hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
@hypothesis.given(
    group=st.lists(st.tuples(st.booleans(), st.floats(0, 1, width=32)), min_size=2, max_size=10),
    num_remove=st.integers(0, 10),
)
def test_prof_keeps_the_most_consistent_and_balances(group, num_remove):
    correct = np.array([[c for c, _ in group]], bool)
    score = np.array([[s for _, s in group]], np.float32)
    keep = np.asarray(pd.prof_keep_mask(correct, score, num_remove=num_remove))[0]
    G = len(group)
    assert keep.sum() == G - min(num_remove, G)
    kept_pos, kept_neg = keep & correct[0], keep & ~correct[0]
    gone_pos, gone_neg = ~keep & correct[0], ~keep & ~correct[0]
    # every removed correct sample scores no higher than every kept one; the reverse for
    # incorrect ones
    if kept_pos.any() and gone_pos.any():
        assert score[0][gone_pos].max() <= score[0][kept_pos].min()
    if kept_neg.any() and gone_neg.any():
        assert score[0][gone_neg].min() >= score[0][kept_neg].max()
    # the kept counts are as balanced as the removal budget allows
    n_pos, n_neg = int(correct.sum()), G - int(correct.sum())
    n = min(num_remove, G)
    best = min(
        abs((n_pos - a) - (n_neg - (n - a))) for a in range(max(0, n - n_neg), min(n, n_pos) + 1)
    )
    assert abs(int(kept_pos.sum()) - int(kept_neg.sum())) <= best + 1


@hypothesis.settings(max_examples=25, deadline=None, derandomize=True)
@hypothesis.given(seed=st.integers(0, 10_000))
def test_prof_matches_the_reference_on_random_groups(seed):
    r = random.Random(seed)
    G = r.randint(2, 9)
    correct = np.array([[r.random() < 0.5 for _ in range(G)]], bool)
    score = np.array([[r.choice([0.0, 0.25, 0.5, 0.75, 1.0]) for _ in range(G)]], np.float32)
    steps = np.array([[r.randint(0, 35) for _ in range(G)]], np.int32)
    num_remove = r.randint(0, G + 1)
    got = np.asarray(
        pd.prof_keep_mask(
            correct, score, num_remove=num_remove, num_steps=steps, length_penalty=10.0
        )
    )
    want = reference_prof_filter(correct, score, steps, n_remove_per_group=num_remove, coef=10.0)
    np.testing.assert_array_equal(got, want)
