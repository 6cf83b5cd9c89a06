"""Token rewards for PPO on math reasoning: success, PRM step rewards (raw, Clip, Delta,
Clip-Delta), ORM score and the per-token KL penalty, assembled in the order of
docs/method.md section 2.

Time convention (docs/design.md section 2): responses are right-padded to T and `mask[b, t]`
marks generated tokens, a prefix of each row; steps are right-padded to K and `step_mask[b, k]`
marks real steps, a prefix of each row; `step_end[b, k]` is the response-token index of the
last token of step k. Reward t is received after emitting token t. Every output is 0 on padding.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax.numpy as jnp

from rlr.checks import check_floating, check_integer, check_shapes

PROCESS_REWARD_METHODS = ("raw", "clip", "delta", "clip_delta")
KL_ESTIMATORS = ("k1", "k2", "k3")


def _check_method(method: str) -> None:
    if method not in PROCESS_REWARD_METHODS:
        raise ValueError(
            f"method must be one of {', '.join(PROCESS_REWARD_METHODS)}; got {method!r}"
        )


def clip_process_rewards(
    scores: chex.Array,  # [B, K] PRM score of each step prefix
    step_mask: chex.Array,  # [B, K] 1 for real steps; real steps form a prefix of each row
    *,
    eta: float,
) -> chex.Array:  # [B, K] float32
    """Clip: r_k = min(x_k - eta, 0) on real steps, 0 on padding.

    Every step reward is <= 0, so adding steps can only lower the return
    (Gao et al. 2024, "PR-Clip").
    """
    check_shapes("clip_process_rewards", scores=(scores, "BK"), step_mask=(step_mask, "BK"))
    check_floating("clip_process_rewards", scores=scores)
    scores = scores.astype(jnp.float32)
    return jnp.where(step_mask.astype(bool), jnp.minimum(scores - eta, 0.0), 0.0)


def delta_process_rewards(
    x: chex.Array,  # [B, K] per-step values (raw PRM scores or clipped ones)
    step_mask: chex.Array,  # [B, K] real steps, a prefix of each row
) -> chex.Array:  # [B, K] float32
    """Delta: with K_b real steps in row b (1-based k), d_k = x_k - x_{k+1} for k <= K_b - 2,
    d_{K_b - 1} = x_{K_b - 1}, d_{K_b} = 0, and 0 on padding.

    With gamma = 1 the sum of d_j over j >= k is x_k for k <= K_b - 1, so the return-to-go from
    any step does not depend on how many steps follow (Gao et al. 2024, "PR-Delta"). The last
    (final-answer) step earns no process reward; K_b = 1 or 0 gives all zeros.
    """
    check_shapes("delta_process_rewards", x=(x, "BK"), step_mask=(step_mask, "BK"))
    check_floating("delta_process_rewards", x=x)
    real = step_mask.astype(bool)
    next_real = jnp.pad(real[:, 1:], ((0, 0), (0, 1)))
    # A step with a real successor: every real step but the row's last one.
    not_last = real & next_real
    not_last_next = jnp.pad(not_last[:, 1:], ((0, 0), (0, 1)))
    x = x.astype(jnp.float32)
    x_next = jnp.pad(x[:, 1:], ((0, 0), (0, 1)))
    return jnp.where(not_last, x - jnp.where(not_last_next, x_next, 0.0), 0.0)


def shape_process_rewards(
    scores: chex.Array,  # [B, K] PRM score of each step prefix
    step_mask: chex.Array,  # [B, K]
    *,
    method: str,
    eta: float | None = None,
) -> chex.Array:  # [B, K] float32
    """Refines PRM step scores into step rewards: "raw" (x, 0 on padding), "clip", "delta" or
    "clip_delta" (Clip with threshold eta, then Delta on the clipped values). The clipping
    methods need `eta`: it has no default, since for probability scores eta <= 0 makes every
    clipped reward 0."""
    _check_method(method)
    if method in ("clip", "clip_delta") and eta is None:
        raise ValueError(
            f"shape_process_rewards: method={method!r} needs eta=, Clip's threshold "
            "(step reward min(x - eta, 0); e.g. 0.5 for probability scores)"
        )
    check_shapes("shape_process_rewards", scores=(scores, "BK"), step_mask=(step_mask, "BK"))
    check_floating("shape_process_rewards", scores=scores)
    if method == "raw":
        return jnp.where(step_mask.astype(bool), scores.astype(jnp.float32), 0.0)
    if method == "clip":
        return clip_process_rewards(scores, step_mask, eta=eta)
    if method == "delta":
        return delta_process_rewards(scores, step_mask)
    return delta_process_rewards(clip_process_rewards(scores, step_mask, eta=eta), step_mask)


def place_at_tokens(
    values: chex.Array,  # [B, K] one value per step
    positions: chex.Array,  # [B, K] integer token index of each value
    valid: chex.Array,  # [B, K] 1 where values[b, k] is real
    *,
    num_tokens: int,
) -> chex.Array:  # [B, T] float32 with T = num_tokens
    """Scatter-adds values[b, k] onto token positions[b, k] of row b where valid.

    Invalid entries contribute nothing whatever their position; valid positions outside
    [0, num_tokens) are dropped too. Two values at one token are summed.
    """
    check_shapes(
        "place_at_tokens",
        values=(values, "BK"),
        positions=(positions, "BK"),
        valid=(valid, "BK"),
    )
    check_integer("place_at_tokens", "integer token indices", positions=positions)
    batch = values.shape[0]
    positions = positions.astype(jnp.int32)
    keep = valid.astype(bool) & (positions >= 0) & (positions < num_tokens)
    # Index num_tokens is out of range, so mode="drop" discards those updates.
    index = jnp.where(keep, positions, num_tokens)
    rows = jnp.broadcast_to(jnp.arange(batch)[:, None], index.shape)
    updates = jnp.where(keep, values.astype(jnp.float32), 0.0)
    return jnp.zeros((batch, num_tokens), jnp.float32).at[rows, index].add(updates, mode="drop")


def kl_penalty(
    logp: chex.Array,  # [B, T] log pi(a_t | s_t) of the policy
    ref_logp: chex.Array,  # [B, T] the same under the reference policy
    *,
    estimator: str = "k1",
    clamp: float | None = None,
) -> chex.Array:  # [B, T] float32
    """Per-token estimate of KL(pi || pi_ref) from sampled tokens (Schulman's estimators).

    k1 = logp - ref_logp (unbiased, can be negative); k2 = 0.5 (logp - ref_logp)^2;
    k3 = exp(ref_logp - logp) - 1 - (ref_logp - logp) (unbiased, >= 0).

    clamp = c > 0 (k3 only) transcribes verl's "low_var_kl" (kl_penalty_forward in
    verl/trainer/ppo/core_algos.py, c = 10 there): ref_logp - logp is clamped to [-20, 20],
    then k3 to [-c, c], which bounds the k3 of a token the reference finds far likelier than
    the policy does (k3 grows like exp(ref_logp - logp)); the gradient is 0 where a clamp
    binds. None (default) leaves k3 unclamped. k1 and k2 take no clamp.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(KL_ESTIMATORS)}; got {estimator!r}")
    if clamp is not None and (estimator != "k3" or not clamp > 0):
        raise ValueError(
            f"kl_penalty: clamp applies to estimator='k3' only and must be > 0; got "
            f"clamp={clamp} with estimator={estimator!r}"
        )
    check_shapes("kl_penalty", logp=(logp, "BT"), ref_logp=(ref_logp, "BT"))
    check_floating("kl_penalty", logp=logp, ref_logp=ref_logp)
    log_ratio = logp.astype(jnp.float32) - ref_logp.astype(jnp.float32)
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * jnp.square(log_ratio)
    if clamp is not None:
        log_ratio = jnp.clip(log_ratio, -20.0, 20.0)
        return jnp.clip(jnp.expm1(-log_ratio) + log_ratio, -clamp, clamp)
    return jnp.expm1(-log_ratio) + log_ratio


class TokenRewards(NamedTuple):
    """Per-token reward components, each [B, T] float32 and 0 on padding.

    total = success + process + outcome + kl; kl holds the -kl_coef * KL term.
    """

    total: chex.Array
    success: chex.Array
    process: chex.Array
    outcome: chex.Array
    kl: chex.Array


def last_token_onehot(
    mask: chex.Array,  # [B, T]
) -> chex.Array:  # [B, T] float32
    """1.0 at the last valid token of each row, 0 elsewhere (all 0 for a row with no token)."""
    check_shapes("last_token_onehot", mask=(mask, "BT"))
    valid = mask.astype(bool)
    t = jnp.arange(mask.shape[1])
    last = jnp.max(jnp.where(valid, t, -1), axis=1, keepdims=True)
    return (t[None, :] == last).astype(jnp.float32)


def _check_token_rewards_args(
    method: str | None,
    kl_estimator: str,
    kl_coef: float,
    step_scores: chex.Array | None,  # [B, K]
    step_end: chex.Array | None,  # [B, K]
    step_mask: chex.Array | None,  # [B, K]
    logp: chex.Array | None,  # [B, T]
    ref_logp: chex.Array | None,  # [B, T]
) -> None:
    """token_rewards' checks of which arguments go together and of the method and estimator."""
    if method is not None:
        _check_method(method)
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(
            f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}; got {kl_estimator!r}"
        )
    step_args = {"step_scores": step_scores, "step_end": step_end, "step_mask": step_mask}
    given = [name for name, a in step_args.items() if a is not None]
    if given and len(given) != 3:
        missing = sorted(set(step_args) - set(given))
        raise ValueError(
            f"token_rewards: step_scores, step_end and step_mask go together; got {given}"
            f" without {missing}"
        )
    if given and method is None:
        raise ValueError(
            f"token_rewards: step scores need method=, one of {', '.join(PROCESS_REWARD_METHODS)}"
        )
    if (logp is None) != (ref_logp is None):
        raise ValueError("token_rewards: logp and ref_logp go together; pass both or neither")
    if logp is None and isinstance(kl_coef, (int, float)) and kl_coef != 0:
        raise ValueError(
            f"token_rewards: kl_coef={kl_coef} needs logp and ref_logp for the KL term"
        )


def token_rewards(
    success: chex.Array,  # [B] Correct(q, s): 1.0 when the final answer is right
    mask: chex.Array,  # [B, T] response tokens, a prefix of each row
    step_scores: chex.Array | None = None,  # [B, K] PRM score of each step prefix
    step_end: chex.Array | None = None,  # [B, K] token index of each step's last token
    step_mask: chex.Array | None = None,  # [B, K] real steps
    orm_score: chex.Array | None = None,  # [B] ORM score of the whole solution
    logp: chex.Array | None = None,  # [B, T] policy log-probs of the sampled tokens
    ref_logp: chex.Array | None = None,  # [B, T] reference-policy log-probs
    *,
    method: str | None = None,
    alpha: float = 1.0,
    eta: float | None = None,
    orm_weight: float = 1.0,
    kl_coef: float = 0.0,
    kl_estimator: str = "k1",
    kl_clamp: float | None = None,
) -> TokenRewards:  # each field [B, T] float32
    """Assembles the per-token reward of docs/method.md section 2, in this order:

    PRM step scores -> shape (method, eta) -> times alpha -> placed at step_end -> + success at
    the last valid token -> + orm_weight * orm_score at the last valid token -> - kl_coef * KL on
    every valid token. Reward t is received after emitting token t; everything is 0 on padding
    (a step reward whose step_end is a padding token is dropped), and a row with no valid token
    is all zeros. Leave step_* (all three) or orm_score or logp/ref_logp (both) as None to
    leave that term out; step scores need a method (and eta when it clips); kl_coef > 0 needs
    logp and ref_logp.
    kl_clamp bounds the k3 estimate as `kl_penalty`'s clamp does (k3 only).
    """
    _check_token_rewards_args(
        method, kl_estimator, kl_coef, step_scores, step_end, step_mask, logp, ref_logp
    )
    sizes = check_shapes(
        "token_rewards",
        success=(success, "B"),
        mask=(mask, "BT"),
        step_scores=(step_scores, "BK"),
        step_end=(step_end, "BK"),
        step_mask=(step_mask, "BK"),
        orm_score=(orm_score, "B"),
        logp=(logp, "BT"),
        ref_logp=(ref_logp, "BT"),
    )
    num_tokens = sizes["T"]
    valid = mask.astype(bool)
    last = last_token_onehot(mask)
    zeros = jnp.zeros(mask.shape, jnp.float32)

    if step_scores is not None:
        step_rewards = shape_process_rewards(step_scores, step_mask, method=method, eta=eta)
        placed = place_at_tokens(alpha * step_rewards, step_end, step_mask, num_tokens=num_tokens)
        process = jnp.where(valid, placed, 0.0)
    else:
        process = zeros
    success_r = last * success.astype(jnp.float32)[:, None]
    if orm_score is not None:
        outcome = last * (orm_weight * orm_score.astype(jnp.float32))[:, None]
    else:
        outcome = zeros
    if logp is not None:
        per_token = kl_penalty(logp, ref_logp, estimator=kl_estimator, clamp=kl_clamp)
        kl = jnp.where(valid, -kl_coef * per_token, 0.0)
    else:
        kl = zeros
    total = process + success_r + outcome + kl
    return TokenRewards(total=total, success=success_r, process=process, outcome=outcome, kl=kl)


def overlong_penalty(
    lengths: chex.Array,  # [B] response lengths in tokens (valid tokens, EOS included)
    *,
    max_length: int,
    buffer: int,
    factor: float = 1.0,
) -> chex.Array:  # [B] float32, <= 0
    """DAPO's overlong reward shaping (arXiv 2503.14476 eq. 13), times `factor`:

    0 for |y| <= L_max - L_cache; ((L_max - L_cache) - |y|) / L_cache for L_max - L_cache <
    |y| <= L_max; -1 beyond L_max, with L_max = max_length (the generation budget) and L_cache
    = buffer. Within the budget it is verl's min(-(|y| - (L_max - L_cache)) / L_cache *
    penalty_factor, 0) (DAPORewardManager, verl/workers/reward_manager/dapo.py).
    """
    if not 0 < buffer <= max_length:
        raise ValueError(
            f"overlong_penalty: buffer must be in 1..max_length={max_length}; got {buffer}"
        )
    check_shapes("overlong_penalty", lengths=(lengths, "B"))
    lengths = jnp.asarray(lengths).astype(jnp.float32)
    expected = max_length - buffer
    ramp = jnp.minimum((expected - lengths) / buffer, 0.0)
    return factor * jnp.where(lengths > max_length, -1.0, ramp)
