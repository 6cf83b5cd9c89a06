"""Other process-reward designs on the footing of rlr.rewards and rlr.advantages: PURE's min-form
credit assignment, PRIME's implicit PRM and PROF's consistency filter.

Each function is transcribed from its authors' code (file and function named in its docstring)
and says where that code differs from the paper's formula. Conventions as docs/design.md
section 2: `mask [B, T]` marks response tokens, a prefix of each row; `step_mask [B, K]` marks
real steps, a prefix of each row; `step_end [B, K]` is the response-token index of each step's
last token; group functions take G samples of each of P prompts as [P, G, ...]. Outputs are 0
on padding. `rlr ppo` selects PURE's softmin and min-form and PRIME's implicit PRM
(reward.method) and PROF's filter (reward.prof_remove) through rlr.training.ppo_core
(docs/method.md, "Other process-reward designs").
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from rlr.advantages import discounted_reverse_cumsum
from rlr.checks import check_floating, check_integer, check_shapes
from rlr.losses import masked_mean, masked_var
from rlr.rewards import last_token_onehot, place_at_tokens

SCORE_KINDS = ("probability", "signed")
PURE_BASELINES = ("token", "step")
PRIME_NORMALIZATIONS = ("none", "batch_norm")


def _signed_scores(fn_name: str, scores: chex.Array, score_kind: str) -> chex.Array:
    """PURE's step score PR = p(+) - p(-): 2x - 1 for a probability x, x itself if signed."""
    if score_kind not in SCORE_KINDS:
        raise ValueError(
            f"{fn_name}: score_kind must be one of {', '.join(SCORE_KINDS)}; got {score_kind!r}"
        )
    scores = scores.astype(jnp.float32)
    return 2.0 * scores - 1.0 if score_kind == "probability" else scores


# --------------------------------------------------------------------------------------------
# PURE (Cheng et al. 2025, arXiv 2504.15275; github.com/CJReinforce/PURE)
# --------------------------------------------------------------------------------------------


def pure_softmin_step_rewards(
    scores: chex.Array,  # [B, K] PRM score of each step prefix
    step_mask: chex.Array,  # [B, K] real steps, a prefix of each row
    *,
    temperature: float = 0.1,
    score_kind: str = "probability",
) -> chex.Array:  # [B, K] float32
    """PURE's approximate min-form: r_k = w_k PR_k with w = softmax_k(-PR_k / temperature) over
    the real steps of a row.

    PR_k = p(+) - p(-) of step k: 2 x_k - 1 for probability scores (score_kind="probability"),
    x_k as given for score_kind="signed". Transcribed from PURE's
    openrlhf/utils/utils.py `turn_process_reward_logits_to_reward` (main branch; called with
    temperature=0.1 in openrlhf/trainer/ppo_utils/experience_maker.py `make_experience`) and
    verl/workers/fsdp_workers.py `_forward_micro_batch` (verl branch, credit_assignment=0.1).
    The row's sum of r_k is a softmin-weighted mean of PR: it lies in [min_k PR_k,
    min_k PR_k + temperature * log K_b] and tends to min_k PR_k as temperature -> 0. A row
    with no real step is all 0 (the authors' softmax over no entries gives NaN).
    """
    check_shapes("pure_softmin_step_rewards", scores=(scores, "BK"), step_mask=(step_mask, "BK"))
    check_floating("pure_softmin_step_rewards", scores=scores)
    pr = _signed_scores("pure_softmin_step_rewards", scores, score_kind)
    real = step_mask.astype(bool)
    logits = jnp.where(real, -pr / temperature, -jnp.inf)
    # A row without real steps: softmax of all -inf is NaN; give it finite logits, then 0.
    any_real = jnp.any(real, axis=1, keepdims=True)
    weights = jax.nn.softmax(jnp.where(any_real, logits, 0.0), axis=1)
    return jnp.where(real, weights * pr, 0.0)


def min_form_step_returns(
    step_rewards: chex.Array,  # [B, K] reward of each step
    step_mask: chex.Array,  # [B, K] real steps, a prefix of each row
) -> chex.Array:  # [B, K] float32
    """The exact min-form return-to-go over steps: R_k = min_{j >= k real} r_j, 0 on padding.

    The paper's min-form credit assignment (PURE, eq. for the min-form value). Adding a step
    never raises any R_k, so a run cannot raise its return by adding steps of any score.
    """
    check_shapes(
        "min_form_step_returns", step_rewards=(step_rewards, "BK"), step_mask=(step_mask, "BK")
    )
    check_floating("min_form_step_returns", step_rewards=step_rewards)
    real = step_mask.astype(bool)
    r = jnp.where(real, step_rewards.astype(jnp.float32), jnp.inf)
    to_go = jax.lax.cummin(r, axis=1, reverse=True)
    return jnp.where(real, to_go, 0.0)


def min_form_returns(
    rewards: chex.Array,  # [B, T] token rewards r_t, received after emitting token t
    mask: chex.Array,  # [B, T] response tokens, a prefix of each row
    *,
    reward_mask: chex.Array | None = None,  # [B, T] tokens that carry a reward
) -> chex.Array:  # [B, T] float32
    """The exact min-form return-to-go over tokens: R_t = min_{s >= t} r_s, 0 on padding.

    reward_mask=None: every valid token counts, those without a reward with r = 0. This is
    PURE's "strict min-form" (verl branch, verl/trainer/ppo/core_algos.py
    `compute_rloo_outcome_advantage` with return_aggregate_method="min": `returns[:, col] =
    torch.min(returns[:, col], returns[:, col + 1])` over the token rewards), where the step
    rewards sit at step ends and every other token has reward 0, so R_t <= 0 on every token
    followed by a reward-free token: the min-form there is min(0, ...) and a positive PRM
    score or success reward is never paid out except on the last token. The authors' loop also
    runs over the padding columns (reward 0), so their R at the last valid token of a row
    shorter than T is min(r, 0) too: pass `mask` all ones (with rewards 0 on padding) and
    multiply by the response mask afterwards to reproduce that exactly.

    reward_mask given: only the tokens it marks count, R_t = min over marked s >= t (the step
    returns of `min_form_step_returns` spread over each step's tokens), and a token with no
    marked token at or after it gets 0.
    """
    check_shapes(
        "min_form_returns",
        rewards=(rewards, "BT"),
        mask=(mask, "BT"),
        reward_mask=(reward_mask, "BT"),
    )
    check_floating("min_form_returns", rewards=rewards)
    valid = mask.astype(bool)
    counts = valid if reward_mask is None else valid & reward_mask.astype(bool)
    r = jnp.where(counts, rewards.astype(jnp.float32), jnp.inf)
    to_go = jax.lax.cummin(r, axis=1, reverse=True)
    return jnp.where(valid & jnp.isfinite(to_go), to_go, 0.0)


def _check_pure_advantages_args(
    step_rewards: chex.Array,  # [P, G, K]
    step_end: chex.Array,  # [P, G, K]
    step_mask: chex.Array,  # [P, G, K]
    mask: chex.Array,  # [P, G, T]
    success: chex.Array,  # [P, G]
    extra_rewards: chex.Array | None,  # [P, G, T]
    baseline: str,
) -> tuple[int, int, int, int]:  # P, G, K, T
    """pure_advantages' checks of its shapes, dtypes, baseline and group size (G >= 2)."""
    if baseline not in PURE_BASELINES:
        raise ValueError(
            f"pure_advantages: baseline must be one of {', '.join(PURE_BASELINES)}; got"
            f" {baseline!r}"
        )
    sizes = check_shapes(
        "pure_advantages",
        step_rewards=(step_rewards, "PGK"),
        step_end=(step_end, "PGK"),
        step_mask=(step_mask, "PGK"),
        mask=(mask, "PGT"),
        success=(success, "PG"),
        extra_rewards=(extra_rewards, "PGT"),
    )
    check_floating("pure_advantages", step_rewards=step_rewards, extra_rewards=extra_rewards)
    check_integer("pure_advantages", "integer token indices", step_end=step_end)
    G = sizes["G"]
    if G < 2:
        raise ValueError(f"pure_advantages: a group needs G >= 2 samples; got G={G}")
    return sizes["P"], G, sizes["K"], sizes["T"]


def pure_advantages(
    step_rewards: chex.Array,  # [P, G, K] PURE step rewards (pure_softmin_step_rewards)
    step_end: chex.Array,  # [P, G, K] int, response index of each step's last token
    step_mask: chex.Array,  # [P, G, K] real steps, a prefix of each row
    mask: chex.Array,  # [P, G, T] response tokens, a prefix of each row
    success: chex.Array,  # [P, G] 1.0 when the final answer is right
    *,
    baseline: str = "token",
    verifiable_coef: float = 1.0,
    extra_rewards: chex.Array | None = None,  # [P, G, T] e.g. -kl_coef * KL per token
    mask_step_ends: bool = True,
) -> chex.Array:  # [P, G, T] float32, 0 on padding
    """PURE's RLOO advantages (main branch, openrlhf/trainer/ppo_utils/experience_maker.py
    `process_experiences` then `make_experience_list` with advantage_estimator="rloo").

    With O_i = sum_k r_{i,k} (the sample's process return) and L_i its number of tokens:
    baseline="token" (their scripts' --reward_baseline token): the step reward at step k's end
    becomes r_{i,k} - a_i n_{i,k} with a_i = sum_{j != i} O_j / sum_{j != i} L_j and n_{i,k}
    the tokens of step k less one (their step length drops the separator, or EOS for the last
    step): step_end[k] - step_end[k-1] - 1 with step_end[-1] = -1. baseline="step": r_{i,k} -
    mean_{j != i} (O_j / K_j). The verifiable reward (success - 1) less the mean of the other
    samples' is added, times verifiable_coef, at the last valid token; extra_rewards (their
    -kl_coef * KL) on every valid token. Advantage = return-to-go with gamma = 1, set to 0 at
    every step end (their process_reward_mask, the last token included) unless
    mask_step_ends=False (their --nomask_separator_adv); no whitening. G < 2 is a ValueError.
    """
    P, G, K, T = _check_pure_advantages_args(
        step_rewards, step_end, step_mask, mask, success, extra_rewards, baseline
    )
    real = step_mask.astype(bool)
    valid = mask.astype(bool)
    r = jnp.where(real, step_rewards.astype(jnp.float32), 0.0)
    outcome = jnp.sum(r, axis=2)  # [P, G]
    others = lambda x: jnp.sum(x, axis=1, keepdims=True) - x  # noqa: E731  sum over j != i
    if baseline == "token":
        lengths = jnp.sum(valid, axis=2).astype(jnp.float32)
        per_token = others(outcome) / jnp.maximum(others(lengths), 1.0)
        ends = step_end.astype(jnp.int32)
        previous = jnp.pad(ends[:, :, :-1], ((0, 0), (0, 0), (1, 0)), constant_values=-1)
        step_tokens = (ends - previous - 1).astype(jnp.float32)
        r = jnp.where(real, r - per_token[:, :, None] * step_tokens, 0.0)
    else:
        num_steps = jnp.sum(real, axis=2).astype(jnp.float32)
        average = outcome / jnp.maximum(num_steps, 1.0)
        r = jnp.where(real, r - (others(average) / (G - 1))[:, :, None], 0.0)
    placed = place_at_tokens(
        r.reshape(P * G, K),
        step_end.reshape(P * G, K).astype(jnp.int32),
        real.reshape(P * G, K),
        num_tokens=T,
    ).reshape(P, G, T)
    verifiable = success.astype(jnp.float32) - 1.0
    verifiable = verifiable - others(verifiable) / (G - 1)
    last = last_token_onehot(mask.reshape(P * G, T)).reshape(P, G, T)
    rewards = placed + verifiable_coef * verifiable[:, :, None] * last
    if extra_rewards is not None:
        rewards = rewards + extra_rewards.astype(jnp.float32)
    rewards = jnp.where(valid, rewards, 0.0)
    to_go = jnp.flip(jnp.cumsum(jnp.flip(rewards, axis=2), axis=2), axis=2)
    if mask_step_ends:
        at_end = place_at_tokens(
            jnp.ones((P * G, K), jnp.float32),
            step_end.reshape(P * G, K).astype(jnp.int32),
            real.reshape(P * G, K),
            num_tokens=T,
        ).reshape(P, G, T)
        to_go = jnp.where((at_end > 0) | (last > 0), 0.0, to_go)
    return jnp.where(valid, to_go, 0.0)


# --------------------------------------------------------------------------------------------
# PRIME (Cui et al. 2025, arXiv 2502.01456; github.com/PRIME-RL/PRIME)
# --------------------------------------------------------------------------------------------


def prime_token_rewards(
    logp_phi: chex.Array,  # [B, T] log pi_phi(y_t | y_<t) of the implicit PRM
    logp_ref: chex.Array,  # [B, T] the same under its reference model
    mask: chex.Array,  # [B, T] response tokens, a prefix of each row
    *,
    beta: float,
    normalization: str = "none",
) -> chex.Array:  # [B, T] float32
    """PRIME's implicit process reward r_t = beta (log pi_phi - log pi_ref) on response tokens.

    The authors' code (training/verl/workers/actor/dp_prime.py `compute_implicit_reward`,
    prime_granularity="token") gives the plain log-ratio q_t, without beta, and their runs
    then divide it by the batch's largest |return-to-go| (`update_policy`,
    prime_norm="batch_norm"): normalization="batch_norm" does that, r_t / (max_{b, t}
    |sum_{s >= t} r_s| + 1e-6) over the whole [B, T] batch, which makes beta all but cancel.
    normalization="none" is the paper's formula.
    """
    if normalization not in PRIME_NORMALIZATIONS:
        raise ValueError(
            "prime_token_rewards: normalization must be one of"
            f" {', '.join(PRIME_NORMALIZATIONS)}; got {normalization!r}"
        )
    check_shapes(
        "prime_token_rewards",
        logp_phi=(logp_phi, "BT"),
        logp_ref=(logp_ref, "BT"),
        mask=(mask, "BT"),
    )
    check_floating("prime_token_rewards", logp_phi=logp_phi, logp_ref=logp_ref)
    valid = mask.astype(bool)
    log_ratio = logp_phi.astype(jnp.float32) - logp_ref.astype(jnp.float32)
    r = jnp.where(valid, beta * log_ratio, 0.0)
    if normalization == "batch_norm":
        to_go = jnp.flip(jnp.cumsum(jnp.flip(r, axis=1), axis=1), axis=1)
        r = r / (jnp.max(jnp.abs(to_go)) + 1e-6)
    return r


def prime_implicit_prm_loss(
    logp_phi: chex.Array,  # [B, T] log pi_phi of the sampled tokens (differentiated)
    logp_ref: chex.Array,  # [B, T] reference log-probs
    mask: chex.Array,  # [B, T] response tokens
    labels: chex.Array,  # [B] outcome label in [0, 1] (1 = correct)
    *,
    beta: float,
) -> chex.Array:  # [] float32
    """The implicit PRM's cross-entropy: mean_b BCE(sigmoid(beta sum_t (log pi_phi -
    log pi_ref)), label_b).

    Transcribed from PRIME's training/verl/trainer/ppo/core_algos.py `compute_ce_dpo_loss_rm`
    (loss_type "ce", beta = prime_model.beta_train = 0.05 in their runs): torch's
    binary_cross_entropy with mean reduction, whose log terms are clamped at -100; the same
    clamp is kept here, computed from log-sigmoids so that it does not overflow.
    """
    check_shapes(
        "prime_implicit_prm_loss",
        logp_phi=(logp_phi, "BT"),
        logp_ref=(logp_ref, "BT"),
        mask=(mask, "BT"),
        labels=(labels, "B"),
    )
    check_floating("prime_implicit_prm_loss", logp_phi=logp_phi, logp_ref=logp_ref)
    valid = mask.astype(jnp.float32)
    log_ratio = logp_phi.astype(jnp.float32) - logp_ref.astype(jnp.float32)
    z = beta * jnp.sum(log_ratio * valid, axis=1)
    y = labels.astype(jnp.float32)
    log_p = jnp.maximum(jax.nn.log_sigmoid(z), -100.0)
    log_not_p = jnp.maximum(jax.nn.log_sigmoid(-z), -100.0)
    return -jnp.mean(y * log_p + (1.0 - y) * log_not_p)


def prime_advantages(
    token_rewards: chex.Array,  # [P, G, T] implicit process rewards (prime_token_rewards)
    outcome: chex.Array,  # [P, G] verifier reward of each sample (1.0 when correct)
    mask: chex.Array,  # [P, G, T] response tokens, a prefix of each row
    *,
    process_gamma: float = 1.0,
    outcome_gamma: float = 1.0,
    whiten: bool = True,
) -> tuple[chex.Array, chex.Array]:  # advantages [P, G, T], returns [P, G, T], float32
    """PRIME's RLOO advantages (training/verl/trainer/ppo/core_algos.py `compute_rloo_returns`).

    Each reward source gets its own leave-one-out baseline, then its own discounted
    return-to-go, and the returns are summed. Process: with m_i the mean of sample i's token
    rewards over its valid tokens, every valid token's reward becomes
    r_{i,t} G/(G-1) - sum_j m_j / (G-1), i.e. r_{i,t} - mean_{j != i} m_j + (r_{i,t} - m_i)/(G-1)
    -- not quite r - mean_{j != i} m_j: the authors subtract r_{i,t} from the group sum where
    m_i would give the plain leave-one-out. Outcome: placed at the last valid token,
    o_i - mean_{j != i} o_j. Returns: sum_{s >= t} gamma^(s-t) of each, process_gamma and
    outcome_gamma (their adv_params.reward_model_gamma and verifier_gamma, both 1.0 in their
    runs). Advantages: the returns whitened over the valid tokens of the whole batch with the
    unbiased variance (verl's masked_whiten), unless whiten=False; both 0 on padding.

    Their RLOO path reads the raw rm_scores and gt_scores tensors, so rm_coef and
    verifier.reward_coef (5 and 5 in their runs) and the KL reward, which only enter
    token_level_scores / token_level_rewards, do not scale anything here; scale the inputs to
    weigh the sources. A row with no valid token has m_i = 0 (NaN in the authors' code).
    """
    sizes = check_shapes(
        "prime_advantages",
        token_rewards=(token_rewards, "PGT"),
        outcome=(outcome, "PG"),
        mask=(mask, "PGT"),
    )
    check_floating("prime_advantages", token_rewards=token_rewards, outcome=outcome)
    P, G, T = sizes["P"], sizes["G"], sizes["T"]
    if G < 2:
        raise ValueError(f"prime_advantages: a group needs G >= 2 samples; got G={G}")
    valid = mask.astype(bool)
    r = jnp.where(valid, token_rewards.astype(jnp.float32), 0.0)
    means = masked_mean(r, valid, axis=2)  # [P, G]
    group_sum = jnp.sum(means, axis=1, keepdims=True)[:, :, None]
    process = jnp.where(valid, r * (G / (G - 1)) - group_sum / (G - 1), 0.0)
    o = outcome.astype(jnp.float32)
    o = o * (G / (G - 1)) - jnp.sum(o, axis=1, keepdims=True) / (G - 1)
    last = last_token_onehot(mask.reshape(P * G, T))
    outcome_tokens = last * o.reshape(P * G)[:, None]
    returns = discounted_reverse_cumsum(process.reshape(P * G, T), process_gamma)
    returns = returns + discounted_reverse_cumsum(outcome_tokens, outcome_gamma)
    returns = jnp.where(valid, returns.reshape(P, G, T), 0.0)
    if not whiten:
        return returns, returns
    mean = masked_mean(returns, valid)
    var = masked_var(returns, valid, unbiased=True)
    advantages = jnp.where(valid, (returns - mean) * jax.lax.rsqrt(var + 1e-8), 0.0)
    return advantages, returns


# --------------------------------------------------------------------------------------------
# PROF (Ye et al. 2025, arXiv 2509.03403; github.com/amazon-science/PROF-GRPO)
# --------------------------------------------------------------------------------------------


def prof_keep_mask(
    correct: chex.Array,  # [P, G] bool, the sample's final answer is right
    mean_step_score: chex.Array,  # [P, G] mean PRM step score of the sample
    *,
    num_remove: int,
    score_kind: str = "probability",
    num_steps: chex.Array | None = None,  # [P, G] number of steps, for the length penalty
    length_penalty: float = 0.0,
    min_steps: int = 2,
    max_steps: int = 30,
) -> chex.Array:  # [P, G] bool, True for the samples kept
    """PROF's process-consistency filter: which samples of each group are kept for the update.

    Transcribed from PROF-GRPO's prof_grpo/prof_grpo_both/prof_ray_trainer.py
    `filter_trajectories` with the consistency of `compute_verify_step_level_score`. Each
    sample's consistency is c_i = s_i (2 correct_i - 1) - length_penalty [K_i < min_steps or
    K_i > max_steps], with s_i the mean signed step score (2 x - 1 for probabilities; the
    authors centre on the batch mean of all steps instead of 0.5, which shifts every sample of
    one correctness by the same amount and so ranks them the same). Their run removes
    num_remove = 4 of G = 8 with length_penalty = 10 (applied to correct and incorrect alike).

    Per group, with n = min(num_remove, G) and d = #correct - #incorrect, the count of correct
    samples to remove is min(n, round((d + n) / 2)) with Python's round (halves to even), capped
    at #correct; the rest of n comes from the incorrect samples, capped at #incorrect. Within
    each correctness the samples of lowest c are removed: correct ones with the lowest mean
    score, incorrect ones with the highest. Ties go as the authors' stable sort: the lower
    index in the group is removed first. Scores must be finite. The authors then drop kept
    samples from the batch's end to a multiple of the GPU count, which is left to the caller.
    """
    sizes = check_shapes(
        "prof_keep_mask",
        correct=(correct, "PG"),
        mean_step_score=(mean_step_score, "PG"),
        num_steps=(num_steps, "PG"),
    )
    check_floating("prof_keep_mask", mean_step_score=mean_step_score)
    G = sizes["G"]
    pos = correct.astype(bool)
    if score_kind not in SCORE_KINDS:
        raise ValueError(
            f"prof_keep_mask: score_kind must be one of {', '.join(SCORE_KINDS)}; got"
            f" {score_kind!r}"
        )
    # 2x - 1 and 2(x - batch mean) rank like 2x within one correctness (and 2x is exact in
    # floating point, where 2x - 1 may round two close scores to one value)
    x = mean_step_score.astype(jnp.float32)
    x = 2.0 * x if score_kind == "probability" else x
    consistency = jnp.where(pos, x, -x)
    if num_steps is not None:
        outside = (num_steps < min_steps) | (num_steps > max_steps)
        consistency = consistency - length_penalty * outside.astype(jnp.float32)
    n_pos = jnp.sum(pos, axis=1).astype(jnp.int32)
    n_neg = G - n_pos
    n_remove = min(int(num_remove), G)
    half = jnp.round((n_pos - n_neg + n_remove).astype(jnp.float32) / 2.0).astype(jnp.int32)
    remove_pos = jnp.clip(jnp.minimum(n_remove, half), 0, n_pos)
    remove_neg = jnp.minimum(n_remove - remove_pos, n_neg)
    # rank of i among the samples of its correctness: lower consistency first, then lower index
    c_i, c_j = consistency[:, :, None], consistency[:, None, :]
    index = jnp.arange(G)
    earlier = (c_j < c_i) | ((c_j == c_i) & (index[None, None, :] < index[None, :, None]))
    same_kind = pos[:, :, None] == pos[:, None, :]
    rank = jnp.sum(earlier & same_kind, axis=2)
    quota = jnp.where(pos, remove_pos[:, None], remove_neg[:, None])
    return rank >= quota
