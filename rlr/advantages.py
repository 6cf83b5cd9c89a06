"""Advantages: GAE over token rewards (with a critic), masked whitening, the running return
statistics of value normalisation, and the critic-free group-relative advantages of GRPO,
Dr. GRPO and RLOO.

Time convention (docs/design.md section 2): reward t is received after emitting token t; `mask`
marks the response tokens, a prefix of each row. After the last valid token the episode ends
and the next value is 0, unless the row was truncated and a bootstrap value is given.
Group-relative functions take G samples of each of P prompts as [P, G, ...] arrays.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from rlr.checks import check_floating, check_shapes
from rlr.losses import masked_mean, masked_var
from rlr.rewards import last_token_onehot, place_at_tokens

GROUP_SCALES = ("std", "none")


def discounted_reverse_cumsum(
    x: chex.Array,  # [B, T]
    decay: float | chex.Array,  # scalar in [0, 1]
    *,
    chunk_size: int = 32,
) -> chex.Array:  # [B, T] float32
    """y_t = sum_{s >= t} decay^(s - t) x_s along T, i.e. y_t = x_t + decay y_{t+1}, y_T = 0.

    T is cut into chunks of chunk_size: inside a chunk the sum is one matmul with the
    [C, C] decay matrix; a reverse `lax.scan` over the chunks carries y at each chunk start
    backwards in time. Same numbers as the step-by-step reverse scan (f32 matmul at HIGHEST
    precision), far fewer sequential steps.
    """
    check_shapes("discounted_reverse_cumsum", x=(x, "BT"))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    batch, num_tokens = x.shape
    size = max(1, min(chunk_size, num_tokens))
    num_chunks = -(-num_tokens // size)
    x = jnp.pad(x.astype(jnp.float32), ((0, 0), (0, num_chunks * size - num_tokens)))
    x = x.reshape(batch, num_chunks, size)
    decay = jnp.asarray(decay, jnp.float32)
    i = jnp.arange(size)
    lag = i[:, None] - i[None, :]  # [s, t] = s - t
    kernel = jnp.where(lag >= 0, decay ** jnp.maximum(lag, 0), 0.0)
    # HIGHEST: with the default precision an H100 ran this f32 matmul in TF32 and the sums
    # were off by ~4e-3; HIGHEST matched the float64 loop to ~5e-6 at the same speed.
    local = jnp.einsum("bns,st->bnt", x, kernel, precision=jax.lax.Precision.HIGHEST)
    chunk_decay = decay**size

    def step(next_start, local_start):
        return local_start + chunk_decay * next_start, next_start

    # next_start[j] = y at the first token of chunk j + 1 (0 after the last chunk).
    _, next_start = jax.lax.scan(
        step, jnp.zeros((batch,), jnp.float32), local[:, :, 0].T, reverse=True
    )
    y = local + next_start.T[:, :, None] * (decay ** (size - i))[None, None, :]
    return y.reshape(batch, num_chunks * size)[:, :num_tokens]


def gae_advantages(
    rewards: chex.Array,  # [B, T] r_t, received after emitting token t
    values: chex.Array,  # [B, T] V(s_t), the critic before emitting token t
    mask: chex.Array,  # [B, T] response tokens, a prefix of each row
    *,
    gamma: float = 1.0,
    lam: float = 1.0,
    bootstrap_value: chex.Array | None = None,  # [B] V after the last token of truncated rows
    chunk_size: int = 32,
) -> tuple[chex.Array, chex.Array]:  # advantages [B, T], returns [B, T], float32
    """GAE: delta_t = r_t + gamma V_{t+1} - V_t and A_t = delta_t + gamma lam A_{t+1}.

    V_{t+1} after the last valid token is bootstrap_value[b] if given, else 0; values on
    padding are ignored; returns = advantages + values; both are 0 on padding. The valid
    tokens must form a prefix of each row (docs/design.md), so that delta is 0 after the episode.
    The backward recursion is a reverse `lax.scan` over chunks of chunk_size tokens with a
    matmul inside each chunk (`discounted_reverse_cumsum`); gamma and lam may be traced.
    """
    check_shapes(
        "gae_advantages",
        rewards=(rewards, "BT"),
        values=(values, "BT"),
        mask=(mask, "BT"),
        bootstrap_value=(bootstrap_value, "B"),
    )
    check_floating("gae_advantages", rewards=rewards, values=values)
    valid = mask.astype(bool)
    r = jnp.where(valid, rewards.astype(jnp.float32), 0.0)
    v = jnp.where(valid, values.astype(jnp.float32), 0.0)
    # V_{t+1}; it is 0 past the last valid token because v is 0 on padding.
    next_v = jnp.pad(v[:, 1:], ((0, 0), (0, 1)))
    if bootstrap_value is not None:
        check_floating("gae_advantages", bootstrap_value=bootstrap_value)
        boot = bootstrap_value.astype(jnp.float32)[:, None]
        next_v = next_v + last_token_onehot(mask) * boot
    deltas = jnp.where(valid, r + gamma * next_v - v, 0.0)
    advantages = discounted_reverse_cumsum(deltas, gamma * lam, chunk_size=chunk_size)
    advantages = jnp.where(valid, advantages, 0.0)
    returns = jnp.where(valid, advantages + v, 0.0)
    return advantages, returns


def masked_whiten(
    x: chex.Array,  # [B, T]
    mask: chex.Array,  # [B, T]
    *,
    shift_mean: bool = True,
    eps: float = 1e-8,
) -> chex.Array:  # [B, T] float32, 0 on padding
    """(x - mean) / sqrt(var + eps) with mean and (population) variance over the valid tokens
    of the whole batch; with shift_mean=False the mean is added back (scale only)."""
    check_shapes("masked_whiten", x=(x, "BT"), mask=(mask, "BT"))
    check_floating("masked_whiten", x=x)
    x = x.astype(jnp.float32)
    mean = masked_mean(x, mask)
    var = masked_var(x, mask)
    out = (x - mean) * jax.lax.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return jnp.where(mask.astype(bool), out, 0.0)


class ValueNormStats(NamedTuple):
    """Running statistics of the critic's targets (ReaLHF's ExponentialRunningMeanStd,
    realhf/impl/model/modules/rms.py): exponential moving averages of the batch mean and the
    batch mean of squares of the returns, and the debiasing term sum_i (1 - beta) beta^i that
    corrects their start from 0. Each [] float32 (ReaLHF keeps float64)."""

    mean: chex.Array  # []
    mean_sq: chex.Array  # []
    debias: chex.Array  # []


def value_norm_init() -> ValueNormStats:
    """Statistics before any update: all 0 (mean 0 and std 0.1 until the first update)."""
    zero = jnp.zeros((), jnp.float32)
    return ValueNormStats(zero, zero, zero)


def value_norm_update(
    stats: ValueNormStats,
    x: chex.Array,  # [B, T] returns
    mask: chex.Array,  # [B, T] response tokens
    *,
    beta: float,
) -> ValueNormStats:
    """One EMA step with the masked batch mean m and mean of squares q of x:
    mean <- beta mean + (1 - beta) m, mean_sq <- beta mean_sq + (1 - beta) q,
    debias <- beta debias + (1 - beta) (ExponentialRunningMeanStd.update). A batch with no
    valid token takes m = q = 0, as a 0/0 would not."""
    check_shapes("value_norm_update", x=(x, "BT"), mask=(mask, "BT"))
    check_floating("value_norm_update", x=x)
    x = x.astype(jnp.float32)
    batch_mean = masked_mean(x, mask)
    batch_mean_sq = masked_mean(jnp.square(x), mask)

    def ema(old: chex.Array, new: chex.Array) -> chex.Array:
        return beta * old + (1.0 - beta) * new

    return ValueNormStats(
        ema(stats.mean, batch_mean), ema(stats.mean_sq, batch_mean_sq), ema(stats.debias, 1.0)
    )


def value_norm_mean_std(
    stats: ValueNormStats, *, eps: float = 1e-5
) -> tuple[chex.Array, chex.Array]:  # mean [], std []
    """Debiased mean and std: mean / max(debias, eps), and the square root of
    mean_sq / max(debias, eps) - mean^2 floored at 1e-2, so std >= 0.1 (ReaLHF's mean_std)."""
    debias = jnp.maximum(stats.debias, eps)
    mean = stats.mean / debias
    var = jnp.maximum(stats.mean_sq / debias - jnp.square(mean), 1e-2)
    return mean, jnp.sqrt(var)


def normalize_values(
    x: chex.Array,  # [...] returns, in reward units
    stats: ValueNormStats,
    *,
    eps: float = 1e-5,
    clip: float = 5.0,
) -> chex.Array:  # [...] float32
    """(x - mean) / std clipped to [-clip, clip] (ReaLHF's normalize: the clip at 5 is "a
    trick from hide and seek"): the targets a value-normalised critic is trained on."""
    mean, std = value_norm_mean_std(stats, eps=eps)
    return jnp.clip((x.astype(jnp.float32) - mean) / std, -clip, clip)


def denormalize_values(
    x: chex.Array,  # [...] critic outputs, in normalised units
    stats: ValueNormStats,
    *,
    eps: float = 1e-5,
) -> chex.Array:  # [...] float32
    """x * std + mean: a value-normalised critic's output in reward units (for GAE)."""
    mean, std = value_norm_mean_std(stats, eps=eps)
    return x.astype(jnp.float32) * std + mean


def _check_group(fn_name: str, group_size: int, scale: str) -> None:
    if scale not in GROUP_SCALES:
        raise ValueError(
            f"{fn_name}: scale must be one of {', '.join(GROUP_SCALES)}; got {scale!r}"
        )
    if group_size < 2:
        raise ValueError(
            f"{fn_name}: a group needs G >= 2 samples of each prompt to compare; got G={group_size}"
        )


def group_outcome_advantages(
    rewards: chex.Array,  # [P, G] outcome reward of sample g of prompt p
    *,
    scale: str = "std",
    leave_one_out: bool = False,
    eps: float = 1e-6,
    keep: chex.Array | None = None,  # [P, G] bool, the samples that form the group
) -> chex.Array:  # [P, G] float32
    """Critic-free advantages of whole samples, relative to the other samples of their prompt.

    scale="std": (r - mean_g r) / (std_g r + eps), the sample std (ddof=1), as GRPO;
    scale="none": r - mean_g r, as Dr. GRPO; leave_one_out=True uses the mean of the *other*
    samples as the baseline, r_i - mean_{j != i} r_j (RLOO), before any scaling. A group whose
    rewards are all equal gets 0 (never NaN). G < 2 is a ValueError.

    keep (PROF's filter, rlr.prof_keep_mask): the group is the kept samples alone: the mean,
    the std (ddof=1) and the leave-one-out baseline are over the kept samples of each prompt, as
    if the others had not been sampled, and a dropped sample gets 0. A prompt with fewer than
    two kept samples, or whose kept rewards are all equal, gets 0.
    """
    sizes = check_shapes("group_outcome_advantages", rewards=(rewards, "PG"), keep=(keep, "PG"))
    check_floating("group_outcome_advantages", rewards=rewards)
    _check_group("group_outcome_advantages", sizes["G"], scale)
    r = rewards.astype(jnp.float32)
    if keep is not None:
        return _kept_group_advantages(r, keep.astype(bool), scale, leave_one_out, eps)
    group = sizes["G"]
    advantages = r - jnp.mean(r, axis=1, keepdims=True)
    if leave_one_out:  # r_i - (sum - r_i) / (G - 1) = G / (G - 1) * (r_i - mean)
        advantages = advantages * (group / (group - 1))
    if scale == "std":
        advantages = advantages / (jnp.std(r, axis=1, ddof=1, keepdims=True) + eps)
    # Exactly 0 for equal rewards: rounding in the mean must not be divided by eps.
    constant = jnp.max(r, axis=1, keepdims=True) == jnp.min(r, axis=1, keepdims=True)
    return jnp.where(constant, 0.0, advantages)


def _kept_group_advantages(
    r: chex.Array,  # [P, G] float32
    kept: chex.Array,  # [P, G] bool
    scale: str,
    leave_one_out: bool,
    eps: float,
) -> chex.Array:  # [P, G] float32
    """group_outcome_advantages over the kept samples of each group only."""
    n = jnp.sum(kept, axis=1, keepdims=True).astype(jnp.float32)
    mean = masked_mean(r, kept, axis=1)[:, None]
    advantages = r - mean
    if leave_one_out:  # r_i - (sum - r_i) / (n - 1) = n / (n - 1) * (r_i - mean)
        advantages = advantages * (n / jnp.maximum(n - 1.0, 1.0))
    if scale == "std":
        var = jnp.sum(jnp.where(kept, jnp.square(r - mean), 0.0), axis=1, keepdims=True)
        advantages = advantages / (jnp.sqrt(var / jnp.maximum(n - 1.0, 1.0)) + eps)
    highest = jnp.max(jnp.where(kept, r, -jnp.inf), axis=1, keepdims=True)
    lowest = jnp.min(jnp.where(kept, r, jnp.inf), axis=1, keepdims=True)
    signal = (n >= 2) & (highest > lowest)
    return jnp.where(kept & signal, advantages, 0.0)


def group_process_advantages(
    step_rewards: chex.Array,  # [P, G, K] reward of each step (e.g. shaped PRM scores)
    step_mask: chex.Array,  # [P, G, K] 1 for real steps, a prefix of each row
    step_end: chex.Array,  # [P, G, K] int, response index of each step's last token
    mask: chex.Array,  # [P, G, T] response tokens, a prefix of each row
    *,
    scale: str = "std",
    center: bool = True,
    eps: float = 1e-6,
) -> chex.Array:  # [P, G, T] float32, 0 on padding
    """Process supervision without a critic (DeepSeekMath): every real step reward of a
    prompt's group is normalised by the mean and std (ddof=1) of all real step rewards in that
    group, and the advantage of token t is the sum of the normalised rewards of the steps whose
    step_end >= t.

    scale="none" only subtracts the group mean. center=False skips the mean: with
    scale="none" the advantage is the plain reward-to-go of the step rewards, which keeps the
    gamma = 1 bounds of Clip and Delta exactly (an added step adds its own reward and nothing
    else); with scale="std" it only divides by the group std, which keeps every sign but
    depends on the group's steps. A centred or std-scaled group with at most one real step, or
    with equal step rewards, gets 0. G < 2 is a ValueError.
    """
    sizes = check_shapes(
        "group_process_advantages",
        step_rewards=(step_rewards, "PGK"),
        step_mask=(step_mask, "PGK"),
        step_end=(step_end, "PGK"),
        mask=(mask, "PGT"),
    )
    check_floating("group_process_advantages", step_rewards=step_rewards)
    _check_group("group_process_advantages", sizes["G"], scale)
    P, G, K, T = sizes["P"], sizes["G"], sizes["K"], sizes["T"]
    real = step_mask.astype(bool)
    r = jnp.where(real, step_rewards.astype(jnp.float32), 0.0)
    mean = masked_mean(r, real, axis=(1, 2))[:, None, None]
    std = jnp.sqrt(masked_var(r, real, axis=(1, 2), unbiased=True))[:, None, None]
    normalised = r - mean if center else r
    if scale == "std":
        normalised = normalised / (std + eps)
    # A group whose real steps all have one value (or with at most one real step) carries
    # no relative signal: exactly 0, whatever rounding the mean left.
    if center or scale == "std":
        highest = jnp.max(jnp.where(real, r, -jnp.inf), axis=(1, 2))[:, None, None]
        lowest = jnp.min(jnp.where(real, r, jnp.inf), axis=(1, 2))[:, None, None]
        normalised = jnp.where(real & (highest > lowest), normalised, 0.0)
    at_tokens = place_at_tokens(
        normalised.reshape(P * G, K),
        step_end.reshape(P * G, K).astype(jnp.int32),
        real.reshape(P * G, K),
        num_tokens=T,
    )
    to_go = jnp.flip(jnp.cumsum(jnp.flip(at_tokens, axis=1), axis=1), axis=1)
    return jnp.where(mask.astype(bool), to_go.reshape(P, G, T), 0.0)
