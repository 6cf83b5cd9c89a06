"""Jitted sampling with a KV cache: one program for prefill + decode, and response log-probs.

Decoding drops finished rows from the batch as it goes (row compaction, see `sample`), and
each row draws with its own keys, so a row's tokens do not depend on the rows beside it.

Prompts are left-padded [B, P] with a prompt_mask; responses come back right-padded [B, T]
with `mask` 1 for generated tokens (EOS included) and pad_id / 0 after EOS. Log-probs are those
of the sampled token under softmax(logits / temperature) (temperature 0, greedy: 1), the
distribution an RL rollout samples from; top-k / top-p filtering is not in them, and RL runs
refuse those filters (rlr.training.schemas.PPOConfig).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from rlr.models.decoder import default_positions, init_cache, unstack_layer_params
from rlr.readouts import policy_readout


class SampleOutput(NamedTuple):
    """Sampled responses: tokens [B, T] int32, logprobs [B, T] f32, mask [B, T] int32."""

    tokens: jax.Array
    logprobs: jax.Array
    mask: jax.Array


def filter_logits(
    logits: chex.Array,  # [B, V]
    *,
    top_k: int = 0,
    top_p: float = 1.0,
) -> chex.Array:  # [B, V]
    """Sets logits outside the top-k and outside the top-p nucleus to -inf (0 / 1.0: off).

    The nucleus keeps the smallest prefix of tokens, by decreasing probability, whose mass
    reaches top_p (always at least the most likely token).
    """
    chex.assert_rank(logits, 2)
    if top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"need top_k >= 0 and 0 < top_p <= 1; got top_k={top_k}, top_p={top_p}")
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        kept = mass_before < top_p
        threshold = jnp.min(jnp.where(kept, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def unrolled_for_decoding(model: nn.Module, params: Any) -> tuple[nn.Module, Any]:
    """(model, params) with the layers unrolled, for a decode loop: a `scan_layers` model
    becomes the same network with `scan_layers=False` and its stacked [L, ...] layer params
    are sliced once into "layers_0" .. "layers_{L-1}" (`unstack_layer_params`).

    Inside a decode loop a scanned model slices every layer's weights out of the stack at
    every step, and on CPU each slice is a copy (a third of a B=16 decode step at the bench
    size). Sliced once per sampler call instead, the copy costs one layer stack of memory
    for the call and nothing per step; the tokens are the same. A model without layers to
    unroll comes back as it is.
    """
    if not getattr(model, "scan_layers", False):
        return model, params
    return model.clone(scan_layers=False), unstack_layer_params(flax.core.unfreeze(params))


def _is_row_keys(key: chex.Array) -> bool:
    """True for a [B] batch of keys (typed keys [B], or raw uint32 keys [B, 2])."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key.ndim == 1
    return key.ndim == 2


def row_keys(
    key: chex.PRNGKey,
    rows: chex.Array,  # [B] int32, the original row index of each row
    t: chex.Array | int,  # [] step, or [B] each row's own step
) -> chex.Array:  # [B] keys
    """The key of each row at step t: fold_in(fold_in(key, row), t).

    A row's draws depend on its own index and step only, not on which other rows share its
    batch, so a sampler may drop finished rows from the batch, or run rows in any slot of a
    continuous batch, without changing any row's tokens.
    """
    chex.assert_rank(rows, 1)
    steps = jnp.broadcast_to(jnp.asarray(t, jnp.int32), rows.shape)
    fold = lambda r, s: jax.random.fold_in(jax.random.fold_in(key, r), s)  # noqa: E731
    return jax.vmap(fold)(rows, steps)


def draw_tokens(
    logits: chex.Array,  # [B, V] f32
    key: chex.PRNGKey,  # one key, or [B] keys (one per row, e.g. `row_keys`)
    *,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
) -> chex.Array:  # [B] int32
    """Greedy argmax when temperature == 0, else a draw from filtered softmax(logits / T).

    Draws by inverting the CDF with one uniform per row: B random numbers per step rather
    than the B x V Gumbel draws of `jax.random.categorical`, which on CPU cost more than the
    whole forward pass of a small model (about 4x slower at B=64, V=8192). The f32 cumsum
    limits resolution to about 1e-5 of probability mass at large V. With [B] keys, row b's
    uniform comes from key[b] alone.
    """
    chex.assert_rank(logits, 2)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0; got {temperature}")
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    scaled = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
    cdf = jnp.cumsum(jax.nn.softmax(scaled, axis=-1), axis=-1)  # [B, V]
    tiny = jnp.finfo(jnp.float32).tiny  # u > 0, so zero-probability tokens are never drawn
    if _is_row_keys(key):
        chex.assert_axis_dimension(key, 0, logits.shape[0])
        u = jax.vmap(lambda k: jax.random.uniform(k, (1,), minval=tiny))(key)
    else:
        u = jax.random.uniform(key, (logits.shape[0], 1), minval=tiny)
    token = jnp.sum(cdf < u * cdf[:, -1:], axis=-1)
    return jnp.minimum(token, logits.shape[-1] - 1).astype(jnp.int32)


def compaction_sizes(batch: int, *, min_rows: int = 8, shards: int = 1) -> tuple[int, ...]:
    """The row counts a compacting decode shrinks through: B, then ceil(B / 2^k) rounded up to
    a multiple of `shards` (the batch's shard count on the mesh), for k = 1, 2, ... while that
    is at least max(min_rows, shards). (B,) alone when B is already that small."""
    if batch < 1 or min_rows < 1 or shards < 1:
        raise ValueError(f"need batch, min_rows and shards >= 1; got {batch}, {min_rows}, {shards}")
    floor = max(min_rows, shards)
    sizes = [batch]
    while True:
        size = -(-sizes[-1] // 2)
        size = -(-size // shards) * shards
        if size < floor or size >= sizes[-1]:
            return tuple(sizes)
        sizes.append(size)


_ROW_FIELDS = ("previous", "done", "rows", "start", "budget")  # _Decoding's [b] fields


class _Decoding(NamedTuple):
    """The decode loop's state: b rows of the batch (b <= B) and the [B, T] outputs."""

    t: jax.Array  # [] int32, the next step to draw
    previous: jax.Array  # [b] int32, the token drawn at step t - 1
    done: jax.Array  # [b] bool, row has ended (EOS or its budget)
    rows: jax.Array  # [b] int32, the original row of each of the b rows
    start: jax.Array  # [b] int32, the position of response token 0
    budget: jax.Array  # [b] int32, the row's token limit
    cache: Any  # KVCache of the b rows
    tokens: jax.Array  # [B, T] int32
    logprobs: jax.Array  # [B, T] f32
    mask: jax.Array  # [B, T] int32


def sample(
    model: nn.Module,
    params: Any,
    prompt_ids: chex.Array,  # [B, P] left-padded
    prompt_mask: chex.Array,  # [B, P] 1 for real prompt tokens
    key: chex.PRNGKey,
    *,
    max_new_tokens: int,
    eos_id: int | Sequence[int],
    pad_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    loop: str = "while",
    budget: chex.Array | None = None,  # [B] int, each row's token limit (None: T)
    compact: bool = True,
    min_rows: int = 8,
    shards: int = 1,
) -> SampleOutput:  # [B, T] each, T = max_new_tokens
    """Prefill the prompt into a B-row cache of P+T slots, then decode until every row ended.

    A row ends at its first EOS (kept, mask 1) or after `budget[b]` tokens (rows stop at
    min(EOS, own budget); None: T for all), whichever comes first. Decoding is a
    `lax.while_loop` that stops as soon as every row has ended (or T tokens).

    compact=True (the default) decodes only the unfinished rows once they fit a smaller static
    size (`compaction_sizes(B, min_rows=, shards=)`: B, B/2, B/4, ... >= min_rows): the loop
    at each size runs while more rows are live than the next size holds, then gathers the live
    rows (cache via `KVCache.take_rows`) and continues with the next size's loop, all in one
    program; tokens are written to the [B, T] outputs at each row's original index. `shards`
    is the batch's shard count on a mesh (`Sampler` reads it off the input), so no size is
    smaller than, or splits unevenly over, the shards. compact=False runs every row until the
    longest one ends; loop="scan" (compact=False only) runs all T steps in a `lax.scan` (the
    same tokens; kept for measuring the loops against each other).

    Row b's token at step t is drawn with fold_in(fold_in(key, b), t) (`row_keys`), so the
    result is a deterministic function of the key, and a row gets the same tokens whether or
    not the batch was compacted. Log-probs are of the drawn token under
    softmax(logits / temperature) before any top-k / top-p filter (greedy: temperature 1).
    `model` is a `DecoderForCausalLM`; jit this with the model and keyword arguments static
    (or use `Sampler`).
    """
    chex.assert_rank([prompt_ids, prompt_mask], 2)
    chex.assert_equal_shape([prompt_ids, prompt_mask])
    _check_decoding(max_new_tokens, loop=loop, compact=compact)
    eos_ids = jnp.asarray([eos_id] if isinstance(eos_id, int) else list(eos_id), jnp.int32)
    batch, _ = prompt_ids.shape
    steps = max_new_tokens
    sizes = compaction_sizes(batch, min_rows=min_rows, shards=shards) if compact else (batch,)
    prompt_mask = prompt_mask.astype(jnp.int32)
    draw = functools.partial(draw_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
    emit = functools.partial(
        _emit, key=key, draw=draw, temperature=temperature, eos_ids=eos_ids, pad_id=pad_id
    )

    def body(state: _Decoding) -> _Decoding:
        logits, cache = model.apply(
            {"params": params},
            state.previous[:, None],
            positions=(state.start + state.t - 1)[:, None],
            cache=state.cache,
        )
        return emit(state._replace(cache=cache), logits[:, 0])

    def live_above(limit: int):  # cond: steps left and more than `limit` rows unfinished
        return lambda state: (state.t < steps) & (jnp.sum(~state.done) > limit)

    state, logits = _prefill(model, params, prompt_ids, prompt_mask, budget, steps, pad_id)
    state = emit(state, logits)
    if loop == "scan":
        state, _ = jax.lax.scan(lambda s, _: (body(s), None), state, None, length=steps - 1)
    else:
        for i, size in enumerate(sizes):
            if i:
                state = keep_live_rows(state, size, _ROW_FIELDS)
            following = sizes[i + 1] if i + 1 < len(sizes) else 0
            state = jax.lax.while_loop(live_above(following), body, state)
    return SampleOutput(tokens=state.tokens, logprobs=state.logprobs, mask=state.mask)


def _check_decoding(max_new_tokens: int, *, loop: str, compact: bool) -> None:
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be positive; got {max_new_tokens}")
    if loop not in ("while", "scan"):
        raise ValueError(f"loop must be 'while' or 'scan'; got {loop!r}")
    if loop == "scan" and compact:
        raise ValueError("loop='scan' runs every row for all T steps; pass compact=False with it")


def _prefill(
    model: nn.Module,
    params: Any,
    prompt_ids: jax.Array,  # [B, P]
    prompt_mask: jax.Array,  # [B, P] int32
    budget: chex.Array | None,  # [B] int (None: T)
    steps: int,  # T
    pad_id: int,
) -> tuple[_Decoding, jax.Array]:  # the loop's state before step 0, logits [B, V]
    """Runs the prompts into a fresh B-row cache of P + T slots: the decode state with empty
    [B, T] outputs, and the last prompt position's logits, which step 0 draws from."""
    batch = prompt_ids.shape[0]
    if budget is None:
        budget = jnp.full((batch,), steps, jnp.int32)
    chex.assert_shape(budget, (batch,))
    budget = jnp.asarray(budget, jnp.int32)
    key_mask = jnp.concatenate([prompt_mask, jnp.ones((batch, steps), jnp.int32)], axis=1)
    cache = init_cache(model.config, key_mask, dtype=model.dtype)
    logits, cache = prefill(model, params, prompt_ids, prompt_mask, cache)
    state = _Decoding(
        t=jnp.int32(0),
        previous=jnp.zeros((batch,), jnp.int32),
        done=budget <= 0,
        rows=jnp.arange(batch, dtype=jnp.int32),
        start=jnp.sum(prompt_mask, axis=1),
        budget=budget,
        cache=cache,
        tokens=jnp.full((batch, steps), pad_id, jnp.int32),
        logprobs=jnp.zeros((batch, steps), jnp.float32),
        mask=jnp.zeros((batch, steps), jnp.int32),
    )
    return state, logits[:, 0]


def prefill(
    model: nn.Module,
    params: Any,
    prompt_ids: jax.Array,  # [B, P] left-padded
    prompt_mask: jax.Array,  # [B, P]
    cache: Any,  # KVCache of B rows, index 0
) -> tuple[jax.Array, Any]:  # logits [B, 1, V] at the last prompt position, the cache
    """Runs the prompts into the cache's first P slots (RoPE positions cumsum(mask) - 1)."""
    return model.apply(
        {"params": params},
        prompt_ids.astype(jnp.int32),
        positions=default_positions(prompt_mask),
        cache=cache,
        last_only=True,
    )


def draw_with_logprobs(
    logits: jax.Array,  # [b, V]
    keys: jax.Array,  # [b] row keys (`row_keys`), or one key when greedy
    *,
    draw: Any,  # draw_tokens with the sampling settings bound
    temperature: float,
) -> tuple[jax.Array, jax.Array]:  # token [b] int32, log-prob [b] f32
    """Each row's token and its log-prob under softmax(logits / temperature) (greedy: 1)."""
    token = draw(logits, keys)
    scaled = logits / temperature if temperature > 0 else logits
    logp = jnp.take_along_axis(jax.nn.log_softmax(scaled), token[:, None], axis=-1)[:, 0]
    return token, logp


def keep_live_rows(state: Any, size: int, fields: Sequence[str]) -> Any:
    """The first `size` rows of a decode state by (finished, index), every live row when
    `size` holds them: each [b] field in `fields` and the cache (`KVCache.take_rows`)."""
    order = jnp.argsort(state.done, stable=True)[:size]
    rows = {name: getattr(state, name)[order] for name in fields}
    return state._replace(**rows, cache=state.cache.take_rows(order))


def _emit(
    state: _Decoding,
    logits: jax.Array,  # [b, V] the next-token logits of the state's b rows
    *,
    key: jax.Array,
    draw: Any,  # draw_tokens with the sampling settings bound
    temperature: float,
    eos_ids: jax.Array,  # [E] int32
    pad_id: int,
) -> _Decoding:
    """Draws step t's token of every row and writes it to the [B, T] outputs at the rows'
    original indices (pad, log-prob 0 and mask 0 for rows that already ended)."""
    t, rows, done = state.t, state.rows, state.done
    keys = row_keys(key, rows, t) if temperature > 0 else key
    token, logp = draw_with_logprobs(logits, keys, draw=draw, temperature=temperature)
    emitted = ~done
    write = dict(mode="promise_in_bounds", unique_indices=True)
    return state._replace(
        t=t + 1,
        previous=token,
        done=done | jnp.isin(token, eos_ids) | (t + 1 >= state.budget),
        tokens=state.tokens.at[rows, t].set(jnp.where(emitted, token, pad_id), **write),
        logprobs=state.logprobs.at[rows, t].set(jnp.where(emitted, logp, 0.0), **write),
        mask=state.mask.at[rows, t].set(emitted.astype(jnp.int32), **write),
    )


def batch_shards(array: Any) -> int:
    """How many shards a [B, ...] array's batch axis is split into (1 for NumPy arrays)."""
    sharding = getattr(array, "sharding", None)
    if sharding is None or not array.shape:
        return 1
    return array.shape[0] // sharding.shard_shape(array.shape)[0]


class Sampler:
    """`sample` jitted once per (B, P) shape for a fixed model and sampling settings.

    Usage: `sampler = Sampler(model, max_new_tokens=128, eos_id=eos, pad_id=pad)`, then
    `sampler(params, prompt_ids, prompt_mask, key)` -> `SampleOutput`. Compacting by default
    (decodes only unfinished rows once they fit a smaller size; `compact=False` turns it off,
    `min_rows` is the smallest size; see `sample`): still one program per (B, P) shape (and
    batch shard count, read off sharded inputs). `unroll_layers` (default) decodes with the
    layers unrolled (`unrolled_for_decoding`: one copy of the layer weights per call, faster
    steps); False keeps a scanned model's scan. `traces` counts compilations, so callers can
    check that equal shapes never retrace.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        max_new_tokens: int,
        eos_id: int | Sequence[int],
        pad_id: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        loop: str = "while",
        compact: bool = True,
        min_rows: int = 8,
        unroll_layers: bool = True,
    ):
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive; got {max_new_tokens}")
        if temperature < 0 or top_k < 0 or not 0.0 < top_p <= 1.0:
            raise ValueError(
                "need temperature >= 0, top_k >= 0 and 0 < top_p <= 1; got "
                f"temperature={temperature}, top_k={top_k}, top_p={top_p}"
            )
        if min_rows < 1:
            raise ValueError(f"min_rows must be >= 1; got {min_rows}")
        if loop == "scan" and compact:
            raise ValueError("loop='scan' runs every row for all T steps; pass compact=False")
        self.model = model
        self.traces = 0
        self.unroll_layers = unroll_layers
        eos = eos_id if isinstance(eos_id, int) else tuple(eos_id)
        self.eos_ids: tuple[int, ...] = (eos,) if isinstance(eos, int) else eos
        self.compact = compact
        settings = dict(
            max_new_tokens=max_new_tokens,
            eos_id=eos,
            pad_id=pad_id,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            loop=loop,
            compact=compact,
            min_rows=min_rows,
        )

        def traced(params, prompt_ids, prompt_mask, key, budget, shards):
            self.traces += 1  # runs once per compilation, never per call
            network, weights = (
                unrolled_for_decoding(model, params) if unroll_layers else (model, params)
            )
            return sample(
                network,
                weights,
                prompt_ids,
                prompt_mask,
                key,
                budget=budget,
                shards=shards,
                **settings,
            )

        self._sample = jax.jit(traced, static_argnames="shards")

    def __call__(
        self,
        params: Any,
        prompt_ids: chex.Array,  # [B, P]
        prompt_mask: chex.Array,  # [B, P]
        key: chex.PRNGKey,
        budget: chex.Array | None = None,  # [B] int, each row's token limit (None: T)
    ) -> SampleOutput:
        """Samples [B, T] responses; compiles on the first call of each (B, P) shape (and
        again once if `budget` is sometimes given and sometimes not)."""
        shards = batch_shards(prompt_ids) if self.compact else 1
        return self._sample(params, prompt_ids, prompt_mask, key, budget, shards=shards)

    def lower(
        self,
        params: Any,
        prompt_ids: Any,  # [B, P], an array or a ShapeDtypeStruct (with its sharding)
        prompt_mask: Any,  # [B, P]
        key: Any,
        budget: Any = None,  # [B]
    ) -> Any:  # jax.stages.Lowered
        """The program `__call__` runs for these (possibly abstract) arguments, lowered and not
        run: rlr plan compiles it to size decoding (the KV cache of B rows of P + T slots)."""
        shards = batch_shards(prompt_ids) if self.compact else 1
        return self._sample.lower(params, prompt_ids, prompt_mask, key, budget, shards=shards)


def sequence_logprobs(
    model: nn.Module,
    params: Any,
    prompt_ids: chex.Array,  # [B, P] left-padded
    prompt_mask: chex.Array,  # [B, P]
    response: chex.Array,  # [B, T]
    response_mask: chex.Array,  # [B, T]
    *,
    temperature: float = 1.0,
) -> chex.Array:  # [B, T] f32, 0 where response_mask is 0
    """Log-probs of the response tokens under one full forward pass (PPO's logp / ref_logp),
    of softmax(logits / temperature).

    Uses the same positions and masking as `sample`, so it reproduces the sampler's logprobs
    at the sampler's temperature (1 for a greedy sampler).
    """
    chex.assert_rank([prompt_ids, prompt_mask, response, response_mask], 2)
    chex.assert_equal_shape([prompt_ids, prompt_mask])
    chex.assert_equal_shape([response, response_mask])
    ids = jnp.concatenate([prompt_ids, response], axis=1).astype(jnp.int32)
    mask = jnp.concatenate([prompt_mask, response_mask], axis=1).astype(jnp.int32)
    # The row layout every trainer reads (rlr.readouts): the LM head runs only on the
    # T columns that predict response tokens, a chunk at a time.
    T = response.shape[1]
    logprobs = policy_readout(model, params, ids, mask, T=T, temperature=temperature).logprobs
    return logprobs * response_mask.astype(jnp.float32)
