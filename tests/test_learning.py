"""Learning tests: what a correct PPO / GRPO / RLOO must do end to end, and what a broken one
cannot, on a task whose optimal policy is known.

The bandit: two prompts, and each prompt has one target response (two letters of a 4-letter
alphabet, then EOS). Reward (success) is 1 when the sampled response is exactly the prompt's
target, else 0. The policy starts from a short SFT on every two-letter response of both prompts
(so each of the 16 responses has probability ~1/16, and greedy decoding gives neither
target); RL must make greedy decoding produce each prompt's target. Everything runs through
the real machinery in the order of `PPOTrainer.iteration`: `make_sampler` -> a `Rollout` ->
`score_rollout` -> `build_experience` -> epochs x minibatches of `ppo_update` under
`make_ppo_optimizer`, with the real networks (critic: the policy's trunk and a zero head, as
`ppo.critic_init=policy` builds it).

Alignment: one sampled rollout with rows of different lengths (EOS and a row cut at the token
budget) checked against NumPy / plain-forward references: where the success reward lands, the
old log-probs, the critic's values and the masks; and which distribution the sampler's and
the trainer's log-probs are of when temperature / top-k / top-p are not 1 / off / 1.
"""

from __future__ import annotations

import dataclasses
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlr.models import DecoderConfig, DecoderForCausalLM, DecoderForTokenClassification, init_params
from rlr.readouts import policy_readout
from rlr.sampling import filter_logits
from rlr.training import ppo_core
from rlr.training.generation import make_sampler
from rlr.training.schemas import ALGORITHM_DEFAULTS, RewardSpec
from rlr.training.train_state import init_train_state

PAD, EOS = 0, 1
LETTERS = (10, 11, 12, 13)
CONFIG = DecoderConfig(
    vocab_size=32,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
    max_position_embeddings=32,
    eos_token_id=EOS,
)
# Two prompts, left-padded to P = 4 (different lengths, so the padding matters).
PROMPTS = np.array([[PAD, 2, 3, 4], [PAD, PAD, 5, 6]], np.int32)
PROMPT_MASK = np.array([[0, 1, 1, 1], [0, 0, 1, 1]], np.int32)
P = PROMPTS.shape[1]
T = 4  # the token budget: a response longer than 3 letters is cut (no EOS)
# Each prompt's target; the SFT policy's greedy response is (13, 13, EOS) for both.
TARGETS = ((LETTERS[3], LETTERS[2], EOS), (LETTERS[0], LETTERS[3], EOS))
TOKENIZER = types.SimpleNamespace(eos_token_id=EOS, pad_token_id=PAD)
POLICY = DecoderForCausalLM(CONFIG)
CRITIC = DecoderForTokenClassification(CONFIG, num_labels=1)
# RL settings (PPOTrainer's, sized for the bandit): G samples per prompt, Adam's learning rate
# for the policy and the critic, epochs x minibatches of updates per iteration.
GROUP, LR, EPOCHS, MINIBATCHES = 16, 1e-3, 1, 2
SUCCESS_ONLY = RewardSpec(use_prm=False, use_orm=False, method="clip_delta", eta=0.5, kl_coef=0.0)


def responses(tokens, mask) -> list[tuple[int, ...]]:
    """Each row's generated tokens (EOS included) as a tuple."""
    return [
        tuple(int(x) for x in row[: int(m.sum())])
        for row, m in zip(np.asarray(tokens), np.asarray(mask))
    ]


SFT_POLICY: list = []  # the sft_policy fixture's params, for success_only_run


@pytest.fixture(scope="module")
def sft_policy():
    """The policy after a short SFT on every (letter, letter, EOS) response of both prompts:
    each letter ~1/4 at each of the two positions, then EOS."""
    params = init_params(POLICY, jax.random.key(0))
    rows = [(i, a, b) for i in range(len(PROMPTS)) for a in LETTERS for b in LETTERS]
    ids = np.array([[*PROMPTS[i], a, b, EOS, PAD] for i, a, b in rows], np.int32)
    attn = np.array([[*PROMPT_MASK[i], 1, 1, 1, 0] for i, _, _ in rows], np.int32)
    response_mask = attn[:, P:].astype(np.float32)
    tx = optax.adam(3e-3)

    def loss(p):
        logp = policy_readout(POLICY, p, ids, attn, T=T).logprobs
        return -jnp.sum(logp * response_mask) / response_mask.sum()

    @jax.jit
    def step(p, opt):
        value, grads = jax.value_and_grad(loss)(p)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt, value

    opt = tx.init(params)
    for _ in range(150):
        params, opt, value = step(params, opt)
    # the entropy of the data: log 4 at each letter, 0 at EOS, over 3 tokens
    assert float(value) < 2 * np.log(4) / 3 + 0.02
    SFT_POLICY[:] = [params]
    return params


@functools.cache
def sampler(temperature: float, top_k: int = 0, top_p: float = 1.0, *, model=POLICY, tokens=T):
    """One compiled sampler per setting (compact=False: every row decodes to the end)."""
    return make_sampler(
        model,
        TOKENIZER,
        max_new_tokens=tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        compact=False,
    )


def greedy(params) -> list[tuple[int, ...]]:
    out = sampler(0.0)(params, PROMPTS, PROMPT_MASK, jax.random.key(0))
    return responses(out.tokens, out.mask)


def make_rollout(prompt_ids, prompt_mask, out, success, K: int = 1) -> ppo_core.Rollout:
    """A Rollout as PPOTrainer.rollout assembles it. Steps: K = 1 step per response, ending at
    its last token (what step segmentation gives a response without a separator)."""
    tokens = np.asarray(out.tokens, np.int32)
    mask = np.asarray(out.mask, np.int32)
    lengths = mask.sum(axis=1)
    step_end = np.zeros((len(tokens), K), np.int32)
    step_end[:, 0] = lengths - 1
    step_mask = np.zeros((len(tokens), K), np.float32)
    step_mask[:, 0] = 1.0
    return ppo_core.Rollout(
        input_ids=jnp.asarray(np.concatenate([prompt_ids, tokens], axis=1)),
        attention_mask=jnp.asarray(np.concatenate([prompt_mask, mask], axis=1)),
        response_mask=jnp.asarray(mask, jnp.float32),
        success=jnp.asarray(success, jnp.float32),
        step_end=jnp.asarray(step_end),
        step_mask=jnp.asarray(step_mask),
    )


def initial_params(algorithm: str, policy):
    """{"policy"[, "critic"]} as build_ppo makes them: a critic (ppo only) is the policy's trunk
    and a zero score head, so V = 0 everywhere at the start; and the frozen reference."""
    params = {"policy": jax.tree.map(jnp.copy, policy)}
    if ALGORITHM_DEFAULTS[algorithm].critic:
        head = jax.eval_shape(lambda: init_params(CRITIC, jax.random.key(0)))["score"]
        params["critic"] = {
            "model": jax.tree.map(jnp.copy, policy["model"]),
            "score": jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), head),
        }
    return params, {"reference": jax.tree.map(jnp.copy, policy)}


def train(
    policy,
    *,
    algorithm: str,
    reward: RewardSpec,
    iterations: int,
    lr: float = LR,
    group: int = GROUP,
    epochs: int = EPOCHS,
    minibatches: int = MINIBATCHES,
    step_scores: float | None = None,
    flip_advantages: bool = False,
    seed: int = 0,
) -> tuple[int | None, list[float]]:
    """RL on the bandit; returns (the first iteration after which greedy decoding gives every
    prompt's target, or None within `iterations`; the success rate of each iteration).

    One iteration is PPOTrainer.iteration's: sample G responses per prompt at temperature 1,
    grade them, score (old log-probs, reference, critic; PRM step scores, when given, through
    score_rollout's `step_scores`), build the experience, then epochs x minibatches of updates
    over a permutation of the rows. `flip_advantages` negates the advantages (a broken update).
    """
    defaults = ALGORITHM_DEFAULTS[algorithm]
    models = ppo_core.PPOModels(policy=POLICY, critic=CRITIC if defaults.critic else None)
    params, frozen = initial_params(algorithm, policy)
    tx = ppo_core.make_ppo_optimizer(
        policy_lr=lr,
        critic_lr=lr if defaults.critic else None,
        weight_decay=0.0,
        max_grad_norm=1.0,
    )
    state = init_train_state(params, tx)
    score = jax.jit(functools.partial(ppo_core.score_rollout, models))
    experience = jax.jit(
        functools.partial(
            ppo_core.build_experience,
            reward=reward,
            algorithm=algorithm,
            group_size=group,
            kl_in_loss=defaults.kl_in_loss,
            gamma=1.0,
            lam=1.0,
            whiten_advantages=True,
        )
    )
    update = jax.jit(
        functools.partial(
            ppo_core.ppo_update,
            models,
            tx,
            clip_eps=0.2,
            value_clip_eps=0.2,
            aggregation=defaults.loss_aggregation,
            kl_coef=reward.kl_coef if defaults.kl_in_loss else 0.0,
        ),
        donate_argnums=0,
    )
    prompt_ids = np.repeat(PROMPTS, group, axis=0)  # G consecutive samples of each prompt
    prompt_mask = np.repeat(PROMPT_MASK, group, axis=0)
    targets = [TARGETS[i] for i in range(len(PROMPTS)) for _ in range(group)]
    B = len(prompt_ids)
    size = B // minibatches
    success_rates: list[float] = []
    for iteration in range(iterations):
        key = jax.random.fold_in(jax.random.key(seed), iteration)
        out = sampler(1.0)(state.params["policy"], prompt_ids, prompt_mask, key)
        success = np.array([r == t for r, t in zip(responses(out.tokens, out.mask), targets)])
        success_rates.append(float(success.mean()))
        rollout = make_rollout(prompt_ids, prompt_mask, out, success.astype(np.float32))
        external = None if step_scores is None else jnp.full((B, 1), step_scores, jnp.float32)
        scored = score(state.params, frozen, rollout, external)
        exp, _ = experience(rollout, scored)
        if flip_advantages:
            exp = exp._replace(advantages=-exp.advantages)
        shuffle = jax.random.fold_in(jax.random.key(seed + 1), iteration)
        for epoch in range(epochs):
            order = jax.random.permutation(jax.random.fold_in(shuffle, epoch), B)
            for m in range(minibatches):
                batch = ppo_core.take_rows(exp, order[m * size : (m + 1) * size])
                state, _ = update(state, batch)
        if greedy(state.params["policy"]) == list(TARGETS):
            return iteration + 1, success_rates
    return None, success_rates


def test_sft_policy_is_not_already_at_the_targets(sft_policy):
    start = greedy(sft_policy)
    assert all(g != t for g, t in zip(start, TARGETS)), start
    assert all(len(g) == 3 and g[-1] == EOS for g in start), start


# The bound on the iterations greedy decoding may take to reach both targets. Measured at
# seeds 0 / 1 / 2 (this file's settings: G = 16, lr 1e-3, 1 epoch x 2 minibatches): ppo
# 39 / 40 / 44, grpo 43 / 37 / 36, rloo 61 / 45 / 33, dr_grpo 65 / 49 / 41; the bound is about
# twice the slowest seed (the tests run seed 0).
REACH_BOUND = {"ppo": 80, "grpo": 80, "rloo": 120, "dr_grpo": 130}


@functools.cache
def success_only_run(algorithm: str) -> tuple[int | None, tuple[float, ...]]:
    """train() with success alone at seed 0 (shared by the tests that compare with it)."""
    reached, success = train(
        SFT_POLICY[0], algorithm=algorithm, reward=SUCCESS_ONLY, iterations=REACH_BOUND[algorithm]
    )
    return reached, tuple(success)


@pytest.mark.parametrize("algorithm", ["ppo", "grpo", "rloo", "dr_grpo"])
def test_greedy_reaches_the_targets(sft_policy, algorithm):
    reached, success = success_only_run(algorithm)
    print(f"{algorithm}: greedy reached the targets after {reached} iterations")
    assert reached is not None, f"{algorithm}: greedy never reached the targets; {success}"
    # and the sampled success rate rose with it
    assert np.mean(success[-5:]) > np.mean(success[:5]) + 0.2, success


# Process rewards that vanish on this task, so every method reduces to success alone: one
# step per response; raw with PRM scores 0 gives step reward 0; clip with scores 1 and eta 0.5
# gives min(1 - 0.5, 0) = 0; delta of a row's only (last) step is 0 whatever its score; and
# clip_delta is delta of clip's zeros. The advantages are then exactly the success-only ones,
# so training must take exactly as many iterations as with success alone.
REDUCING_PRM = {"raw": 0.0, "clip": 1.0, "delta": 0.7, "clip_delta": 1.0}


@pytest.mark.parametrize(
    "algorithm, method",
    [("ppo", "clip_delta"), ("ppo", "raw"), ("grpo", "clip"), ("rloo", "delta")],
)
def test_prm_rewards_that_reduce_to_success_learn_as_success(sft_policy, algorithm, method):
    reward = RewardSpec(use_prm=True, use_orm=False, method=method, alpha=1.0, eta=0.5, kl_coef=0.0)
    want, _ = success_only_run(algorithm)
    got, _ = train(
        sft_policy,
        algorithm=algorithm,
        reward=reward,
        iterations=REACH_BOUND[algorithm],
        step_scores=REDUCING_PRM[method],
    )
    assert got is not None and got == want


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_flipped_advantages_never_reach_the_targets(sft_policy, algorithm):
    """The negative control: the same run with the advantages' sign flipped must fail, so the
    tests above cannot pass whatever the update does."""
    reached, success = train(
        sft_policy,
        algorithm=algorithm,
        reward=SUCCESS_ONLY,
        iterations=REACH_BOUND[algorithm] // 2,
        flip_advantages=True,
    )
    assert reached is None
    assert np.mean(success[-10:]) < 0.02, success


def test_zero_learning_rate_never_reaches_the_targets(sft_policy):
    reached, _ = train(sft_policy, algorithm="grpo", reward=SUCCESS_ONLY, iterations=10, lr=0.0)
    assert reached is None


# ---------------------------------------------------------------- alignment on one rollout

# A policy with sharper logits (embeddings x 5: its most likely token has ~0.4 on average
# rather than ~0.05) and nine EOS ids (~20% of its mass), so sampled rows end at different
# lengths and some run into the budget.
ALIGN_EOS = (EOS, 7, 8, 9, 10, 11, 12, 13, 14)
ALIGN_POLICY = DecoderForCausalLM(dataclasses.replace(CONFIG, eos_token_id=ALIGN_EOS))
ALIGN_T = 6
ALIGN_G = 6  # rows per prompt: B = 12


@pytest.fixture(scope="module")
def sharp():
    """(policy params, reference params, critic params): three different networks."""
    keys = jax.random.split(jax.random.key(7), 3)

    def sharpen(params):
        model = dict(params["model"])
        model["embed_tokens"] = {"embedding": params["model"]["embed_tokens"]["embedding"] * 5}
        return {**params, "model": model}

    policy = sharpen(init_params(ALIGN_POLICY, keys[0]))
    reference = sharpen(init_params(ALIGN_POLICY, keys[1]))
    critic = init_params(CRITIC, keys[2])
    critic["score"] = jax.tree.map(lambda x: x * 50, critic["score"])  # values of order 1
    return policy, reference, critic


def sample_rows(policy, temperature=1.0, top_k=0, top_p=1.0, seed=3):
    ids = np.repeat(PROMPTS, ALIGN_G, axis=0)
    mask = np.repeat(PROMPT_MASK, ALIGN_G, axis=0)
    draw = sampler(temperature, top_k, top_p, model=ALIGN_POLICY, tokens=ALIGN_T)
    assert draw.eos_ids == ALIGN_EOS
    return ids, mask, draw(policy, ids, mask, jax.random.key(seed))


def full_logprobs(params, ids, attn) -> np.ndarray:
    """log softmax of the full [B, S, V] logits of a plain forward pass, in float64."""
    logits = np.asarray(ALIGN_POLICY.apply({"params": params}, ids, attn), np.float64)
    return (
        logits
        - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1))[..., None]
        - logits.max(-1, keepdims=True)
    )


def gathered(logp_full: np.ndarray, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[B, T]: response token t's log-prob, read at column P + t - 1; 0 past each row's end."""
    B = len(tokens)
    out = np.zeros(tokens.shape)
    for b in range(B):
        for t in range(lengths[b]):
            out[b, t] = logp_full[b, P + t - 1, tokens[b, t]]
    return out


def test_sampled_rows_mark_exactly_their_tokens(sharp):
    """(c) the response mask is a prefix covering the generated tokens: up to and including
    the first EOS, or all T tokens of a row cut at the budget (no EOS); padding after."""
    _, _, out = sample_rows(sharp[0])
    tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
    lengths = mask.sum(axis=1)
    ended = []
    for b in range(len(tokens)):
        n = lengths[b]
        assert n >= 1
        np.testing.assert_array_equal(mask[b], np.arange(ALIGN_T) < n)
        np.testing.assert_array_equal(tokens[b, n:], PAD)
        assert not np.isin(tokens[b, : n - 1], ALIGN_EOS).any()
        ended.append(bool(np.isin(tokens[b, n - 1], ALIGN_EOS)))
        if not ended[-1]:
            assert n == ALIGN_T
    # the rollout exercises what it should: EOS rows, a truncated row, several lengths
    assert any(ended) and not all(ended) and len(set(lengths)) >= 3, (lengths, ended)


def test_scores_and_rewards_align_with_the_tokens(sharp):
    """(a) success on the last response token (the EOS when there is one), the KL reward on
    every token; (b) old / reference log-probs and the sampler's own log-probs equal the plain
    forward pass's log softmax at the previous column; values read there too; (c) everything is
    0 past each row's end. Checked through score_rollout and build_experience (ppo, gamma 0.5,
    lam 1, no whitening: the returns are the discounted sums of the token rewards)."""
    policy, reference, critic = sharp
    ids, prompt_mask, out = sample_rows(policy)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.mask).sum(axis=1)
    B = len(tokens)
    success = (np.arange(B) % 3 != 0).astype(np.float32)
    rollout = make_rollout(ids, prompt_mask, out, success)
    models = ppo_core.PPOModels(policy=ALIGN_POLICY, critic=CRITIC)
    params = {"policy": policy, "critic": critic}
    scored = jax.jit(functools.partial(ppo_core.score_rollout, models))(
        params, {"reference": reference}, rollout
    )
    ids_full, attn = np.asarray(rollout.input_ids), np.asarray(rollout.attention_mask)
    want_logp = gathered(full_logprobs(policy, ids_full, attn), tokens, lengths)
    want_ref = gathered(full_logprobs(reference, ids_full, attn), tokens, lengths)
    np.testing.assert_allclose(scored.old_logp, want_logp, atol=2e-5)
    np.testing.assert_allclose(scored.ref_logp, want_ref, atol=2e-5)
    np.testing.assert_allclose(out.logprobs, want_logp, atol=2e-5)  # the sampler's, T = 1
    scores = np.asarray(CRITIC.apply({"params": critic}, ids_full, attn))[..., 0]
    want_values = np.zeros((B, ALIGN_T))
    for b in range(B):
        want_values[b, : lengths[b]] = scores[b, P - 1 : P - 1 + lengths[b]]
    np.testing.assert_allclose(scored.old_values, want_values, atol=1e-5)
    assert np.abs(want_values).max() > 0.1 and np.abs(want_logp - want_ref).max() > 0.1

    gamma, beta = 0.5, 0.05
    for kl_coef in (0.0, beta):
        reward = dataclasses.replace(SUCCESS_ONLY, kl_coef=kl_coef, kl_estimator="k1")
        exp, _ = ppo_core.build_experience(
            rollout, scored, reward, algorithm="ppo", kl_in_loss=False, gamma=gamma, lam=1.0,
            whiten_advantages=False,
        )  # fmt: skip
        want_returns = np.zeros((B, ALIGN_T))
        for b in range(B):
            n = lengths[b]
            r = -kl_coef * (want_logp[b, :n] - want_ref[b, :n])
            r[n - 1] += success[b]  # the success reward: on the last token, EOS or not
            for t in range(n):
                want_returns[b, t] = sum(gamma ** (s - t) * r[s] for s in range(t, n))
        np.testing.assert_allclose(exp.returns, want_returns, atol=2e-5)
        np.testing.assert_allclose(exp.advantages, want_returns - want_values, atol=2e-5)
        np.testing.assert_array_equal(exp.response_mask, np.asarray(out.mask, np.float32))
        np.testing.assert_array_equal(exp.attention_mask[:, P:], out.mask)

    # critic-free: one advantage per row on each of its tokens, 0 past its end
    exp, _ = ppo_core.build_experience(
        rollout, scored, SUCCESS_ONLY, algorithm="grpo", group_size=ALIGN_G, kl_in_loss=True
    )
    advantages = np.asarray(exp.advantages)
    for g in range(len(PROMPTS)):
        rows = slice(g * ALIGN_G, (g + 1) * ALIGN_G)
        r = success[rows]
        want = (r - r.mean()) / (r.std(ddof=1) + 1e-6)
        for b, w in zip(range(rows.start, rows.stop), want):
            np.testing.assert_allclose(advantages[b, : lengths[b]], w, atol=1e-5)
            np.testing.assert_array_equal(advantages[b, lengths[b] :], 0.0)


# ----------------------------------------- which distribution the log-probs are of


def sampling_logprobs(params, ids, attn, tokens, lengths, temperature, top_k, top_p):
    """[B, T] log-probs of the tokens under the distribution they were drawn from:
    log softmax(filter(logits / temperature)), read at the previous column."""
    logits = ALIGN_POLICY.apply({"params": params}, ids, attn).astype(jnp.float32)
    B, S, V = logits.shape
    scaled = filter_logits((logits / temperature).reshape(B * S, V), top_k=top_k, top_p=top_p)
    logq = np.asarray(jax.nn.log_softmax(scaled, axis=-1)).reshape(B, S, V)
    return gathered(logq, tokens, lengths)


def scored_rows(sharp, temperature, top_k, top_p):
    policy = sharp[0]
    ids, prompt_mask, out = sample_rows(policy, temperature, top_k, top_p)
    rollout = make_rollout(ids, prompt_mask, out, np.zeros(len(ids), np.float32))
    models = ppo_core.PPOModels(policy=ALIGN_POLICY, critic=None)
    scored = ppo_core.score_rollout(
        models, {"policy": policy}, {"reference": policy}, rollout, temperature=temperature
    )
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.mask).sum(axis=1)
    ids_full, attn = np.asarray(rollout.input_ids), np.asarray(rollout.attention_mask)
    logp = gathered(full_logprobs(policy, ids_full, attn), tokens, lengths)
    logq = sampling_logprobs(policy, ids_full, attn, tokens, lengths, temperature, top_k, top_p)
    return out, scored, logp, logq


def test_plain_sampling_trains_on_the_sampling_distribution(sharp):
    """temperature 1, no top-k / top-p (every shipped config): the sampler's log-probs and
    the old log-probs of the ratio are those of the distribution the tokens came from."""
    out, scored, logp, logq = scored_rows(sharp, 1.0, 0, 1.0)
    np.testing.assert_allclose(logp, logq, atol=1e-5)
    np.testing.assert_allclose(out.logprobs, logq, atol=2e-5)
    np.testing.assert_allclose(scored.old_logp, logq, atol=2e-5)


@pytest.mark.parametrize("temperature", [0.5, 0.7, 1.5])
def test_tempered_sampling_trains_on_the_sampling_distribution(sharp, temperature):
    """At any temperature, the sampler's log-probs and the old log-probs score_rollout computes
    for the ratio and the KL are those of softmax(logits / temperature), the distribution the
    tokens were drawn from (they differ from the temperature-1 policy's)."""
    out, scored, logp, logq = scored_rows(sharp, temperature, 0, 1.0)
    mask = np.asarray(out.mask) > 0
    np.testing.assert_allclose(np.asarray(out.logprobs)[mask], logq[mask], atol=2e-5)
    np.testing.assert_allclose(np.asarray(scored.old_logp)[mask], logq[mask], atol=2e-5)
    np.testing.assert_allclose(np.asarray(scored.ref_logp)[mask], logq[mask], atol=2e-5)
    assert np.abs(logp - logq)[mask].max() > 0.1


@pytest.mark.parametrize("top_k, top_p", [(3, 1.0), (0, 0.7)])
def test_rl_runs_refuse_filters_that_would_train_on_another_distribution(top_k, top_p):
    from rlr import configs
    from rlr.config_loading import ConfigError, load_config
    from rlr.training.schemas import PPOConfig

    with pytest.raises(ConfigError, match="a top-k / top-p filter would sample"):
        overrides = [f"rollout.top_k={top_k}", f"rollout.top_p={top_p}"]
        load_config(PPOConfig, configs.resolve("ppo_cpu"), overrides)


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.5, 0, 1.0), (1.0, 2, 1.0)])
def test_tokens_are_drawn_from_the_shaped_distribution(sharp, temperature, top_k, top_p):
    """The first token of 4096 draws of one prompt: its frequencies match
    softmax(filter(logits / temperature)), not the temperature-1 policy; the sampler's
    log-probs are those of softmax(logits / temperature), before the filter."""
    policy = sharp[0]
    n = 4096
    ids, mask = np.repeat(PROMPTS[:1], n, axis=0), np.repeat(PROMPT_MASK[:1], n, axis=0)
    draw = sampler(temperature, top_k, top_p, model=ALIGN_POLICY, tokens=ALIGN_T)
    out = draw(policy, ids, mask, jax.random.key(11), budget=np.ones(n, np.int32))
    first = np.asarray(out.tokens)[:, 0]
    assert np.all(np.asarray(out.mask)[:, 1:] == 0)
    freq = np.bincount(first, minlength=CONFIG.vocab_size) / n
    logits = ALIGN_POLICY.apply({"params": policy}, PROMPTS[:1], PROMPT_MASK[:1])[:, -1]
    q = np.asarray(jax.nn.softmax(filter_logits(logits / temperature, top_k=top_k, top_p=top_p)))
    p = np.asarray(jax.nn.softmax(logits))
    tempered = np.asarray(jax.nn.softmax(logits / temperature))
    sampled_p = np.exp(np.asarray(out.logprobs)[:, 0])
    np.testing.assert_allclose(sampled_p, tempered[0, first], rtol=1e-4)
    assert 0.5 * np.abs(freq - q[0]).sum() < 0.03  # sampling noise: ~0.01
    assert 0.5 * np.abs(freq - p[0]).sum() > 0.1
