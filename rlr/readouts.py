"""Where every trainer reads a network on the row layout: policy logits, values, PRM / ORM scores.

A row is the prompt (left-padded to P) followed by the response (right-padded to T):
`input_ids [B, S = P + T]`. Response token t sits at column P + t and is predicted by the
logits at column P + t - 1, so the policy's log-prob of token t and the critic's value V(s_t)
(the state before emitting token t) are read at column P + t - 1. A PRM scores the prefix that
ends at a step's last token, so its score for step k is read at column P + step_end[b, k]; an
ORM is read at the last response token (EOS included).

SFT, reward-model training, best-of-N and PPO all read through these functions, so a reward
model is trained on exactly the logits that PPO later turns into rewards.

The policy's log-probs go through the LM head's readout at the bottom of this module:
`lm_head_readout(hidden, weight, tokens)` returns, for every position, the log-probability of
the given token, the entropy of the next-token distribution and its argmax. It computes the
logits hidden @ weight.T a chunk of positions at a time and keeps only per-position numbers;
its backward pass recomputes each chunk's logits and turns them straight into the gradients of
hidden and weight. So neither pass holds the [B, T, V] logits (f32: 1.2 GB per 2,048 tokens at
a 152k vocabulary) nor their gradient, and on CPU it avoids the full-size transposes XLA
inserts around the head's backward matmuls.

The result equals `token_logprobs(hidden @ weight.T, tokens)` (and `entropy_from_logits`,
`argmax`) up to float rounding, with gradients that match autodiff's. Only `logprobs` carries a
gradient; `entropy` and `argmax` are readouts for metrics.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from rlr.checks import check_integer, check_shapes
from rlr.packing import PackedRows, next_in_segment, unpack


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
    packing: PackedRows | None = None,
) -> TokenReadout:  # logprobs, entropy [B, T] f32; argmax [B, T] int32
    """The policy's log-prob of each response token (the last T columns of input_ids [B, S]),
    with the entropy and argmax of its prediction there, read through `lm_head_readout`:
    the same numbers as `policy_logits` gives, without building the [B, T, V] logits. With a
    `temperature`, they are those of softmax(logits / temperature), the distribution a rollout
    at that temperature samples from (logits / t = (hidden / t) @ W^T, so the hidden states are
    scaled and the gradient flows through the division).

    With `packing` (rlr.packing.pack_rows of these rows) the trunk and the head run on the
    packed rows instead, and the result is mapped back to [B, T]: the same numbers, up to float
    rounding, at the real response tokens (positions past a row's end are not meaningful)."""
    weight = policy.apply({"params": params}, method=lambda m: m.head_weight())
    scale = (lambda h: h / jnp.asarray(temperature, h.dtype)) if temperature != 1.0 else None
    if packing is None:
        hidden = _response_hidden(policy, params, input_ids, attention_mask, T=T)
        hidden = scale(hidden) if scale else hidden
        return lm_head_readout(hidden, weight, input_ids[:, input_ids.shape[1] - T :])
    hidden = policy.apply(
        {"params": params},
        packing.input_ids,
        None,
        packing.positions,
        None,
        packing.segment_ids,
        method=lambda m, *args: m.model(*args),
    )
    hidden = scale(hidden) if scale else hidden
    readout = lm_head_readout(hidden, weight, next_in_segment(packing))
    prompt_len = input_ids.shape[1] - T
    return TokenReadout(
        *(
            response_slice(unpack(x, packing.source), prompt_len=prompt_len, num_tokens=T)
            for x in readout
        )
    )


def _response_hidden(
    policy: nn.Module, params: Any, input_ids: chex.Array, attention_mask: chex.Array, *, T: int
) -> chex.Array:  # [B, T, D]
    """The trunk's hidden states at the T columns that predict the response tokens."""
    hidden = policy.apply(
        {"params": params}, input_ids, attention_mask, method=lambda m, i, a: m.model(i, a)
    )
    return response_slice(hidden, prompt_len=input_ids.shape[1] - T, num_tokens=T)


def critic_values(
    critic: nn.Module,
    params: Any,
    input_ids: chex.Array,
    attention_mask: chex.Array,
    *,
    T: int,
    packing: PackedRows | None = None,
) -> chex.Array:  # [B, T] f32
    """V(s_t) for each response token t: the critic's score at the column before token t
    (computed on packed rows with `packing`, as `policy_readout`)."""
    prompt_len = input_ids.shape[1] - T
    scores = score_logits(critic, params, input_ids, attention_mask, packing=packing)
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
    scorer: nn.Module,
    params: Any,
    input_ids: chex.Array,  # [B, S]
    attention_mask: chex.Array,  # [B, S]
    *,
    packing: PackedRows | None = None,
) -> chex.Array:  # [B, S]
    """The one-label score head's logit at every column of the rows; with `packing`
    (rlr.packing.pack_rows of these rows) computed on the packed rows and mapped back (0 on
    padding columns)."""
    if packing is None:
        return scorer.apply({"params": params}, input_ids, attention_mask)[..., 0]
    packed = scorer.apply(
        {"params": params},
        packing.input_ids,
        positions=packing.positions,
        segment_ids=packing.segment_ids,
    )
    return unpack(packed[..., 0], packing.source)


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


def reward_model_scores(
    prm: nn.Module | None,
    orm: nn.Module | None,
    params: dict[str, Any],  # {"prm"?, "orm"?}
    input_ids: chex.Array,  # [B, S]
    attention_mask: chex.Array,  # [B, S]
    response_mask: chex.Array,  # [B, T]
    step_end: chex.Array,  # [B, K]
    step_mask: chex.Array,  # [B, K]
    text_step_scores: chex.Array | None = None,  # [B, K] from a PRM read outside the graph
) -> tuple[chex.Array, chex.Array]:  # step scores [B, K], ORM score [B]
    """The PRM's step scores and the ORM's score of every row, as PPO's rewards and best-of-N's
    rerankers read them: an in-graph PRM through `prm_step_scores`, else `text_step_scores`
    (a PRM that reads text, scored by rlr.training.step_scoring) masked to the real steps,
    else 0; the ORM through `orm_scores`, else 0."""
    if prm is not None:
        T = response_mask.shape[1]
        steps = prm_step_scores(
            prm, params["prm"], input_ids, attention_mask, step_end, step_mask, T=T
        )
    elif text_step_scores is not None:
        chex.assert_equal_shape([text_step_scores, step_mask])
        steps = text_step_scores.astype(jnp.float32) * step_mask
    else:
        steps = jnp.zeros(step_end.shape, jnp.float32)
    if orm is not None:
        outcome = orm_scores(orm, params["orm"], input_ids, attention_mask, response_mask)
    else:
        outcome = jnp.zeros(response_mask.shape[:1], jnp.float32)
    return steps, outcome


# ----------------------------------------------------------------- the LM head

# Rows (batch x chunk positions) of logits computed at once: 512 keeps a chunk of an 8k-vocab
# head in a CPU's L3 cache and a 152k-vocab head's matmul compute-bound on a GPU.
DEFAULT_CHUNK_ROWS = 512


class TokenReadout(NamedTuple):
    """Per-position readouts of softmax(hidden @ weight.T), all [B, T]."""

    logprobs: jax.Array  # f32, log p(tokens[b, t]); differentiable
    entropy: jax.Array  # f32, entropy of the distribution; no gradient
    argmax: jax.Array  # int32, the most likely token; no gradient


def _chunk_logits(hidden: jax.Array, weight: jax.Array) -> jax.Array:
    """[B, C, D] x [V, D] -> [B, C, V] f32."""
    return jax.lax.dot_general(
        hidden, weight, (((2,), (1,)), ((), ())), preferred_element_type=jnp.float32
    )


def _forward_chunk(hidden, weight, tokens):
    """One chunk: [B, C, D], [V, D], [B, C] -> logprobs, entropy, argmax, logsumexp [B, C]."""
    logits = _chunk_logits(hidden, weight)
    top = jnp.max(logits, axis=-1, keepdims=True)
    shifted = jnp.exp(logits - top)
    total = jnp.sum(shifted, axis=-1)
    log_z = top[..., 0] + jnp.log(total)
    picked = jnp.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0]
    entropy = log_z - jnp.sum(shifted * logits, axis=-1) / total
    argmax = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return picked - log_z, entropy, argmax, log_z


def _to_chunks(x: jax.Array, chunk: int) -> jax.Array:
    """[B, n*C, ...] -> [n, B, C, ...]: chunks along T, so a batch-sharded B stays sharded."""
    batch, length = x.shape[:2]
    x = x.reshape(batch, length // chunk, chunk, *x.shape[2:])
    return jnp.moveaxis(x, 1, 0)


def _from_chunks(x: jax.Array) -> jax.Array:
    """[n, B, C, ...] -> [B, n*C, ...]."""
    x = jnp.moveaxis(x, 0, 1)
    return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _readout(hidden, weight, tokens, chunk):
    return _readout_fwd(hidden, weight, tokens, chunk)[0]


def _readout_fwd(hidden, weight, tokens, chunk):
    logprobs, entropy, argmax, log_z = jax.lax.map(
        lambda xs: _forward_chunk(xs[0], weight, xs[1]),
        (_to_chunks(hidden, chunk), _to_chunks(tokens, chunk)),
    )
    readout = TokenReadout(_from_chunks(logprobs), _from_chunks(entropy), _from_chunks(argmax))
    return readout, (hidden, weight, tokens, _from_chunks(log_z))


def _readout_bwd(chunk, residuals, cotangent):
    hidden, weight, tokens, log_z = residuals
    grad = cotangent.logprobs.astype(jnp.float32)
    vocab = weight.shape[0]

    def body(weight_grad_t, xs):
        hidden_c, tokens_c, log_z_c, grad_c = xs
        probs = jnp.exp(_chunk_logits(hidden_c, weight) - log_z_c[..., None])
        one_hot = jnp.arange(vocab) == tokens_c[..., None]
        # d logp(token) / d logits = one_hot - softmax, scaled by the incoming gradient.
        logits_grad = (grad_c[..., None] * (one_hot - probs)).astype(weight.dtype)
        hidden_grad = jnp.einsum("bcv,vd->bcd", logits_grad, weight)
        # The weight's gradient accumulates as [D, V] = hidden^T @ logits_grad: the small
        # [B*C, D] operand is the one transposed, never the [B*C, V] logits gradient.
        weight_grad_t = weight_grad_t + jnp.einsum(
            "bcd,bcv->dv", hidden_c, logits_grad, preferred_element_type=jnp.float32
        )
        return weight_grad_t, hidden_grad.astype(hidden.dtype)

    xs = tuple(_to_chunks(x, chunk) for x in (hidden, tokens, log_z, grad))
    init = jnp.zeros(weight.shape[::-1], jnp.float32)
    weight_grad_t, hidden_grad = jax.lax.scan(body, init, xs)
    return _from_chunks(hidden_grad), weight_grad_t.T.astype(weight.dtype), None


_readout.defvjp(_readout_fwd, _readout_bwd)


def chunk_positions(batch: int, length: int, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> int:
    """Positions per chunk C for a [B, T] readout: at most `chunk_rows` rows (B x C) a chunk
    (at least one position), as few chunks as that allows, and C as small as those chunks
    allow, so that padding T up to a whole number of chunks adds less than one chunk."""
    widest = max(1, min(length, chunk_rows // max(batch, 1)))
    chunks = -(-length // widest)
    return -(-length // chunks)


def lm_head_readout(
    hidden: chex.Array,  # [B, T, D] final hidden states at the positions to read
    weight: chex.Array,  # [V, D] the LM head (a tied embedding; an untied kernel transposed)
    tokens: chex.Array,  # [B, T] integer ids whose log-probabilities to return
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> TokenReadout:  # logprobs, entropy [B, T] f32; argmax [B, T] int32
    """log softmax(hidden @ weight.T)[tokens], the entropy and the argmax at every position,
    computed `chunk_rows` rows of logits at a time (f32 accumulation for any input dtype).

    Differentiable in hidden and weight through `logprobs` only; positions past T (T padded up
    to a whole number of chunks) are computed on zeros and dropped.
    """
    sizes = check_shapes(
        "lm_head_readout",
        hidden=(hidden, "BTD"),
        weight=(weight, "VD"),
        tokens=(tokens, "BT"),
    )
    check_integer("lm_head_readout", tokens=tokens)
    if chunk_rows < 1:
        raise ValueError(f"lm_head_readout: chunk_rows must be >= 1, got {chunk_rows}")
    batch, length = sizes["B"], sizes["T"]
    chunk = chunk_positions(batch, length, chunk_rows=chunk_rows)
    padded = -(-length // chunk) * chunk
    tokens = tokens.astype(jnp.int32)
    if padded != length:
        hidden = jnp.pad(hidden, ((0, 0), (0, padded - length), (0, 0)))
        tokens = jnp.pad(tokens, ((0, 0), (0, padded - length)))
    readout = _readout(hidden, weight.astype(hidden.dtype), tokens, chunk)
    return TokenReadout(*(x[:, :length] for x in readout))
