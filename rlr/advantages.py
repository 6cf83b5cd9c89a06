"""Generalised advantage estimation over token rewards, and masked whitening.

Time convention (DESIGN.md section 2): reward t is received after emitting token t; `mask`
marks the response tokens, a prefix of each row. After the last valid token the episode ends
and the next value is 0, unless the row was truncated and a bootstrap value is given.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from rlr.losses import check_floating, check_shapes, masked_mean, masked_var
from rlr.rewards import last_token_onehot


def gae_advantages(
    rewards: chex.Array,  # [B, T] r_t, received after emitting token t
    values: chex.Array,  # [B, T] V(s_t), the critic before emitting token t
    mask: chex.Array,  # [B, T] response tokens, a prefix of each row
    *,
    gamma: float = 1.0,
    lam: float = 1.0,
    bootstrap_value: chex.Array | None = None,  # [B] V after the last token of truncated rows
    unroll: int = 1,
) -> tuple[chex.Array, chex.Array]:  # advantages [B, T], returns [B, T], float32
    """GAE: delta_t = r_t + gamma V_{t+1} - V_t and A_t = delta_t + gamma lam A_{t+1}.

    V_{t+1} after the last valid token is bootstrap_value[b] if given, else 0; values on
    padding are ignored; returns = advantages + values; both are 0 on padding. Computed by a
    reverse `lax.scan` over time, vectorised over B (`unroll`: time steps per loop
    iteration; 1 ran fastest on CPU and compiles fastest).
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
    decay = gamma * lam

    def step(acc, xs):
        delta_t, valid_t = xs
        acc = jnp.where(valid_t, delta_t + decay * acc, 0.0)
        return acc, acc

    _, adv_time_major = jax.lax.scan(
        step,
        jnp.zeros(r.shape[:1], jnp.float32),
        (deltas.T, valid.T),
        reverse=True,
        unroll=unroll,
    )
    advantages = adv_time_major.T
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
