"""Where every trainer reads a network on the row layout: policy logits, values, PRM / ORM scores.

A row is the prompt (left-padded to P) followed by the response (right-padded to T):
`input_ids [B, S = P + T]`. Response token t sits at column P + t and is predicted by the
logits at column P + t - 1, so the policy's log-prob of token t and the critic's value V(s_t)
(the state before emitting token t) are read at column P + t - 1. A PRM scores the prefix that
ends at a step's last token, so its score for step k is read at column P + step_end[b, k]; an
ORM is read at the last response token (EOS included).

SFT, reward-model training, best-of-N and PPO all read through these functions, so a reward
model is trained on exactly the logits that PPO later turns into rewards.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from rlr.head_readout import TokenReadout, lm_head_readout


def response_slice(x: chex.Array, *, prompt_len: int, num_tokens: int) -> chex.Array:
    """Columns P-1 .. P+T-2 of a [B, S, ...] array: the predictions for response tokens 0..T-1."""
    return jax.lax.slice_in_dim(x, prompt_len - 1, prompt_len - 1 + num_tokens, axis=1)


def policy_logits(
    policy: nn.Module, params: Any, input_ids: chex.Array, attention_mask: chex.Array, *, T: int
) -> chex.Array:  # [B, T, V] f32
    """Logits that predict each response token (input_ids [B, S], attention_mask [B, S]).

    The LM head runs on the T response columns only ([B, T, V], not [B, S, V]): with a large
    vocabulary the head is most of the memory of a forward pass.
    """
    hidden = _response_hidden(policy, params, input_ids, attention_mask, T=T)
    return policy.apply({"params": params}, hidden, method=lambda m, h: m.logits(h))


def policy_readout(
    policy: nn.Module,
    params: Any,
    input_ids: chex.Array,
    attention_mask: chex.Array,
    *,
    T: int,
    temperature: float = 1.0,
) -> TokenReadout:  # logprobs, entropy [B, T] f32; argmax [B, T] int32
    """The policy's log-prob of each response token (the last T columns of input_ids [B, S]),
    with the entropy and argmax of its prediction there, read through `lm_head_readout`:
    the same numbers as `policy_logits` gives, without building the [B, T, V] logits. With a
    `temperature`, they are those of softmax(logits / temperature), the distribution a rollout
    at that temperature samples from (logits / t = (hidden / t) @ W^T, so the hidden states are
    scaled and the gradient flows through the division)."""
    hidden = _response_hidden(policy, params, input_ids, attention_mask, T=T)
    if temperature != 1.0:
        hidden = hidden / jnp.asarray(temperature, hidden.dtype)
    weight = policy.apply({"params": params}, method=lambda m: m.head_weight())
    return lm_head_readout(hidden, weight, input_ids[:, input_ids.shape[1] - T :])


def _response_hidden(
    policy: nn.Module, params: Any, input_ids: chex.Array, attention_mask: chex.Array, *, T: int
) -> chex.Array:  # [B, T, D]
    """The trunk's hidden states at the T columns that predict the response tokens."""
    hidden = policy.apply(
        {"params": params}, input_ids, attention_mask, method=lambda m, i, a: m.model(i, a)
    )
    return response_slice(hidden, prompt_len=input_ids.shape[1] - T, num_tokens=T)


def critic_values(
    critic: nn.Module, params: Any, input_ids: chex.Array, attention_mask: chex.Array, *, T: int
) -> chex.Array:  # [B, T] f32
    """V(s_t) for each response token t: the critic's score at the column before token t."""
    prompt_len = input_ids.shape[1] - T
    scores = critic.apply({"params": params}, input_ids, attention_mask)[..., 0]
    return response_slice(scores, prompt_len=prompt_len, num_tokens=T)


def critic_readout(
    critic: nn.Module,
    params: Any,
    input_ids: chex.Array,  # [B, S]
    attention_mask: chex.Array,  # [B, S]
    response_mask: chex.Array,  # [B, T]
) -> tuple[chex.Array, chex.Array]:  # values [B, T], final value [B], f32
    """`critic_values`, and from the same pass V(s_L): the critic's score at the last response
    token (the state after the whole response), which GAE bootstraps from when the response
    was cut off rather than ended."""
    T = response_mask.shape[1]
    prompt_len = input_ids.shape[1] - T
    scores = critic.apply({"params": params}, input_ids, attention_mask)[..., 0]
    last = last_response_index(response_mask)[:, None]
    final = token_logits_at(scores, last, prompt_len=prompt_len)[:, 0]
    return response_slice(scores, prompt_len=prompt_len, num_tokens=T), final


def token_logits_at(
    token_logits: chex.Array,  # [B, S] per-column score logits
    positions: chex.Array,  # [B, K] response indices
    *,
    prompt_len: int,
) -> chex.Array:  # [B, K] logits
    """Score logits read at response positions (column P + position, clipped into the row).

    The one place where PRM / ORM scores are read: PPO reads sigmoid of this, and reward-model
    training puts its loss on exactly these logits.
    """
    chex.assert_rank([token_logits, positions], 2)
    columns = jnp.clip(positions + prompt_len, 0, token_logits.shape[1] - 1)
    return jnp.take_along_axis(token_logits, columns, axis=1)


def last_response_index(response_mask: chex.Array) -> chex.Array:  # [B, T] -> [B] int32
    """Index of each row's last response token (its EOS when present): where an ORM is read."""
    return jnp.maximum(jnp.sum(response_mask, axis=1).astype(jnp.int32) - 1, 0)


def score_logits(
    scorer: nn.Module, params: Any, input_ids: chex.Array, attention_mask: chex.Array
) -> chex.Array:  # [B, S]
    """The one-label score head's logit at every column of the rows."""
    return scorer.apply({"params": params}, input_ids, attention_mask)[..., 0]


def step_logits(
    token_logits: chex.Array,  # [B, S] from score_logits
    step_end: chex.Array,  # [B, K] response index of each step's last token
    *,
    T: int,
) -> chex.Array:  # [B, K]
    """A PRM's logit for each step prefix p(k), read at the step's last token."""
    return token_logits_at(token_logits, step_end, prompt_len=token_logits.shape[1] - T)


def outcome_logits(
    token_logits: chex.Array,  # [B, S] from score_logits
    response_mask: chex.Array,  # [B, T]
) -> chex.Array:  # [B]
    """An ORM's logit for the whole solution, read at the last response token."""
    prompt_len = token_logits.shape[1] - response_mask.shape[1]
    last = last_response_index(response_mask)[:, None]
    return token_logits_at(token_logits, last, prompt_len=prompt_len)[:, 0]


def prm_step_scores(
    prm: nn.Module,
    params: Any,
    input_ids: chex.Array,  # [B, S]
    attention_mask: chex.Array,  # [B, S]
    step_end: chex.Array,  # [B, K]
    step_mask: chex.Array,  # [B, K]
    *,
    T: int,
) -> chex.Array:  # [B, K] in (0, 1), 0 on padded steps
    """A token-classification PRM's probability that each step prefix p(k) is correct."""
    logits = score_logits(prm, params, input_ids, attention_mask)
    return jax.nn.sigmoid(step_logits(logits, step_end, T=T)) * step_mask


def orm_scores(
    orm: nn.Module,
    params: Any,
    input_ids: chex.Array,  # [B, S]
    attention_mask: chex.Array,  # [B, S]
    response_mask: chex.Array,  # [B, T]
) -> chex.Array:  # [B] in (0, 1)
    """An ORM's probability that the whole solution is correct, read at its last token."""
    logits = score_logits(orm, params, input_ids, attention_mask)
    return jax.nn.sigmoid(outcome_logits(logits, response_mask))
