"""Masked reductions and the PPO losses: policy (clipped ratio, with a choice of how tokens
are aggregated), value (clipped), entropy.

All reductions over tokens are masked means, sum / count over the valid tokens of the whole
batch, never a mean over padding; a mask with no valid token gives 0, not NaN.

Argument checks live in rlr.checks, shared with the rest of the maths API.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from rlr.checks import check_integer, check_shapes


def _check_same_shape(fn_name: str, x: chex.Array, mask: chex.Array) -> None:
    try:
        chex.assert_equal_shape([x, mask])
    except AssertionError:
        raise ValueError(
            f"{fn_name}: mask must have the shape of x; got x {tuple(jnp.shape(x))}"
            f" and mask {tuple(jnp.shape(mask))}"
        ) from None


def _as_mask(mask: chex.Array) -> chex.Array:
    return jnp.asarray(mask).astype(jnp.float32)


def masked_sum(
    x: chex.Array,  # [...]
    mask: chex.Array,  # same shape as x; 1 (or True) where x counts
    *,
    axis: int | tuple[int, ...] | None = None,
) -> chex.Array:  # [] or x reduced over axis
    """Sum of x over the entries where mask is set."""
    _check_same_shape("masked_sum", x, mask)
    return jnp.sum(jnp.where(mask.astype(bool), x, 0.0), axis=axis)


def masked_mean(
    x: chex.Array,  # [...]
    mask: chex.Array,  # same shape as x
    *,
    axis: int | tuple[int, ...] | None = None,
) -> chex.Array:  # [] or x reduced over axis
    """sum(x * mask) / sum(mask); 0 (not NaN) where the mask selects nothing."""
    _check_same_shape("masked_mean", x, mask)
    total = masked_sum(x, mask, axis=axis)
    count = jnp.sum(_as_mask(mask), axis=axis)
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


def masked_var(
    x: chex.Array,  # [...]
    mask: chex.Array,  # same shape as x
    *,
    axis: int | tuple[int, ...] | None = None,
    unbiased: bool = False,
) -> chex.Array:  # [] or x reduced over axis
    """Variance of x over the masked entries (population variance unless unbiased=True).

    0 where the mask selects nothing (or only one entry when unbiased).
    """
    _check_same_shape("masked_var", x, mask)
    mean = masked_mean(x, mask, axis=axis)
    if axis is not None:
        mean = jnp.expand_dims(mean, axis)
    sq = masked_sum(jnp.square(x - mean), mask, axis=axis)
    count = jnp.sum(_as_mask(mask), axis=axis)
    denom = count - 1.0 if unbiased else count
    return jnp.where(denom > 0, sq / jnp.maximum(denom, 1.0), 0.0)


LOSS_AGGREGATIONS = ("token_mean", "sequence_mean", "token_sum")
# How ppo_policy_loss forms the importance ratio: per token (PPO), or per sequence (GSPO)
IMPORTANCE_RATIOS = ("token", "sequence")


def aggregate_token_losses(
    losses: chex.Array,  # [B, T] per-token loss
    mask: chex.Array,  # [B, T] 1 on response tokens
    *,
    aggregation: str = "token_mean",
) -> chex.Array:  # []
    """One loss from per-token losses.

    token_mean: sum / count over every valid token of the batch (long responses weigh more);
    sequence_mean: each row's token mean, then the mean over rows with a valid token (GRPO);
    token_sum: the sum over valid tokens divided by the constant B * T, T the generation budget,
    so no response's tokens are weighted by its length (Dr. GRPO).
    """
    check_shapes("aggregate_token_losses", losses=(losses, "BT"), mask=(mask, "BT"))
    if aggregation == "token_mean":
        return masked_mean(losses, mask)
    if aggregation == "sequence_mean":
        per_row = masked_mean(losses, mask, axis=1)
        has_tokens = jnp.any(mask.astype(bool), axis=1)
        return masked_mean(per_row, has_tokens)
    if aggregation == "token_sum":
        return masked_sum(losses, mask) / (losses.shape[0] * losses.shape[1])
    raise ValueError(
        f"aggregation must be one of {', '.join(LOSS_AGGREGATIONS)}; got {aggregation!r}"
    )


def _check_policy_loss_options(dual_clip: float | None, importance_ratio: str) -> None:
    """ppo_policy_loss's checks of its dual-clip bound and importance-ratio form."""
    if dual_clip is not None and not dual_clip > 1.0:
        raise ValueError(f"ppo_policy_loss: dual_clip must be > 1; got {dual_clip}")
    if importance_ratio not in IMPORTANCE_RATIOS:
        raise ValueError(
            f"ppo_policy_loss: importance_ratio must be one of {', '.join(IMPORTANCE_RATIOS)};"
            f" got {importance_ratio!r}"
        )


def ppo_policy_loss(
    logp: chex.Array,  # [B, T] log pi(a_t | s_t) under the current policy
    old_logp: chex.Array,  # [B, T] the same under the policy that sampled the batch
    advantages: chex.Array,  # [B, T]
    mask: chex.Array,  # [B, T] 1 on response tokens
    *,
    clip_eps: float = 0.2,
    aggregation: str = "token_mean",
    dual_clip: float | None = None,
    clip_eps_low: float | None = None,
    clip_eps_high: float | None = None,
    importance_ratio: str = "token",
) -> tuple[chex.Array, dict[str, chex.Array]]:  # loss [], metrics of []
    """PPO clipped surrogate max(-A r, -A clip(r, 1-eps, 1+eps)) per token, aggregated over
    tokens as `aggregation` says (aggregate_token_losses; default the mean over valid tokens).

    r = exp(logp - old_logp). Gradients flow through logp only. Metrics: clip_fraction (tokens
    where the clipped term was the larger), approx_kl (Schulman's k3, (r - 1) - log r) and
    ratio_mean, all masked token means.

    dual_clip = c > 1 (Ye et al. 2020, arXiv:1912.09729; verl's `clip_ratio_c`, 3.0 there)
    bounds the loss of a token with A < 0 by -A c: min(max(-A r, -A clip(r)), -A c), so a
    ratio far above 1 on a bad action cannot grow the loss without bound; tokens with A >= 0
    keep the plain clipped loss. As verl's compute_policy_loss (verl/trainer/ppo/core_algos.py),
    without its clamp of log r to [-20, 20]. Extra metric dual_clip_fraction: tokens with A < 0
    whose loss the bound replaced. None (default) leaves the loss as above.

    clip_eps_low / clip_eps_high (DAPO's clip-higher, arXiv 2503.14476 eq. 10; verl's
    clip_ratio_low / clip_ratio_high): the ratio is clipped to [1 - low, 1 + high]; None
    takes clip_eps for that side, so the default is the symmetric clip.

    importance_ratio="sequence" (GSPO, arXiv 2507.18071): every token of row i carries the
    row's ratio s_i = exp(mean over its valid tokens of (logp - old_logp)), in verl's token
    form s_i,t = sg[s_i] * pi / sg[pi] (compute_policy_loss_gspo): its value is s_i, its
    gradient s_i * grad logp_t, so a sequence_mean aggregation gives GSPO's gradient of
    min(s_i A_i, clip(s_i) A_i). verl forces seq-mean-token-mean for it; rlr's config asks for
    ppo.loss_aggregation=sequence_mean. Unlike verl, log s_i,t is not clamped at 10 (as the
    token ratio is not clamped). Extra metric sequence_ratio_mean: the mean s_i over rows
    with a valid token; clip_fraction counts tokens, as verl's pg_clipfrac; ratio_mean and
    approx_kl stay token-level. "token" (default): the per-token ratio r above.
    """
    _check_policy_loss_options(dual_clip, importance_ratio)
    low = clip_eps if clip_eps_low is None else clip_eps_low
    high = clip_eps if clip_eps_high is None else clip_eps_high
    check_shapes(
        "ppo_policy_loss",
        logp=(logp, "BT"),
        old_logp=(old_logp, "BT"),
        advantages=(advantages, "BT"),
        mask=(mask, "BT"),
    )
    old_logp = jax.lax.stop_gradient(old_logp)
    advantages = jax.lax.stop_gradient(advantages)
    log_ratio = logp.astype(jnp.float32) - old_logp.astype(jnp.float32)
    ratio = jnp.exp(log_ratio)
    surrogate_ratio = ratio
    if importance_ratio == "sequence":
        log_seq = masked_mean(jax.lax.stop_gradient(log_ratio), mask, axis=1)  # [B]
        logp32 = logp.astype(jnp.float32)
        surrogate_ratio = jnp.exp(logp32 - jax.lax.stop_gradient(logp32) + log_seq[:, None])
    unclipped = -advantages * surrogate_ratio
    clipped = -advantages * jnp.clip(surrogate_ratio, 1.0 - low, 1.0 + high)
    losses = jnp.maximum(unclipped, clipped)
    metrics = {
        "clip_fraction": masked_mean((clipped > unclipped).astype(jnp.float32), mask),
        "approx_kl": masked_mean(jax.lax.stop_gradient((ratio - 1.0) - log_ratio), mask),
        "ratio_mean": masked_mean(jax.lax.stop_gradient(ratio), mask),
    }
    if importance_ratio == "sequence":
        has_tokens = jnp.any(mask.astype(bool), axis=1)
        metrics["sequence_ratio_mean"] = masked_mean(jnp.exp(log_seq), has_tokens)
    if dual_clip is not None:
        bound = -advantages * dual_clip
        negative = advantages < 0
        bounded = negative & (losses > bound)
        metrics["dual_clip_fraction"] = masked_mean(bounded.astype(jnp.float32), mask)
        losses = jnp.where(negative, jnp.minimum(losses, bound), losses)
    loss = aggregate_token_losses(losses, mask, aggregation=aggregation)
    return loss, metrics


def ppo_value_loss(
    values: chex.Array,  # [B, T] critic output now
    old_values: chex.Array,  # [B, T] critic output when the batch was sampled
    returns: chex.Array,  # [B, T] GAE returns (targets)
    mask: chex.Array,  # [B, T]
    *,
    clip_eps: float = 0.2,
) -> tuple[chex.Array, dict[str, chex.Array]]:  # loss [], metrics of []
    """Clipped value loss: 0.5 * mean over valid tokens of max((v - R)^2, (v_clip - R)^2).

    v_clip = old_v + clip(v - old_v, -eps, eps). Metric value_clip_fraction: tokens where the
    clipped error was the larger.
    """
    check_shapes(
        "ppo_value_loss",
        values=(values, "BT"),
        old_values=(old_values, "BT"),
        returns=(returns, "BT"),
        mask=(mask, "BT"),
    )
    old_values = jax.lax.stop_gradient(old_values)
    returns = jax.lax.stop_gradient(returns)
    values = values.astype(jnp.float32)
    clipped_values = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    err = jnp.square(values - returns)
    err_clipped = jnp.square(clipped_values - returns)
    loss = 0.5 * masked_mean(jnp.maximum(err, err_clipped), mask)
    metrics = {
        "value_clip_fraction": masked_mean((err_clipped > err).astype(jnp.float32), mask),
    }
    return loss, metrics


def entropy_from_logits(
    logits: chex.Array,  # [B, T, V]
) -> chex.Array:  # [B, T] float32
    """Entropy of softmax(logits) per token, computed in float32: logsumexp(z) - sum p z."""
    check_shapes("entropy_from_logits", logits=(logits, "BTV"))
    z = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(z, axis=-1)
    p = jax.nn.softmax(z, axis=-1)
    return log_z - jnp.sum(p * z, axis=-1)


def token_logprobs(
    logits: chex.Array,  # [B, T, V] logits predicting tokens[b, t]
    tokens: chex.Array,  # [B, T] integer token ids
) -> chex.Array:  # [B, T] float32
    """log softmax(logits)[tokens], in float32 even for bf16 logits (gather, then logsumexp)."""
    check_shapes("token_logprobs", logits=(logits, "BTV"), tokens=(tokens, "BT"))
    check_integer("token_logprobs", tokens=tokens)
    z = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(z, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(z, axis=-1)
