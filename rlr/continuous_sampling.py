"""Continuous batching: S decode slots that take the next waiting prompt as soon as a row ends.

`rlr.sampling.sample` decodes a batch until its longest row ends (compacting finished rows
away into smaller static sizes); a slot freed by an early EOS stays idle until then, and the
next batch's prompts wait. `ContinuousSampler` instead keeps S slots busy over a queue of
N >= S prompts: when at least R slots (`refill_rows`) are free and prompts wait, the next R
prompts are prefilled into those slots (their KV cache rows reset) and decoding goes on.

Three jitted programs per (N, P): `admit` (prefill R prompts into R given slots and draw their
first tokens), `decode` (step every slot until R slots are free) and, once no prompt waits,
`drain` (decode the last rows to their ends, compacting them into smaller static sizes as
`rlr.sampling.sample` does). The host loop between them reads only the slots' done flags.

Each slot carries its own step t and its own KV write slot (`KVCache.index` [S]), so rows at
different steps share one decode call. Row b's token at step t is drawn with
fold_in(fold_in(key, b), t) (`rlr.sampling.row_keys`), as in `sample`: a prompt's tokens do
not depend on the slot or the neighbours it ran with, and greedy or sampled, the outputs equal
`sample`'s for the same key (up to the float rounding of a different batch composition).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rlr.models.decoder import KVCache, init_cache
from rlr.sampling import (
    SampleOutput,
    compaction_sizes,
    draw_tokens,
    draw_with_logprobs,
    keep_live_rows,
    prefill,
    row_keys,
    unrolled_for_decoding,
)

_SLOT_FIELDS = ("t", "previous", "done", "rows", "start", "budget")  # SlotState's [S]


class SlotState(NamedTuple):
    """The decode slots (S of them) and the [N, T] outputs of the N prompts."""

    t: jax.Array  # [S] int32, the next step each slot's row draws
    previous: jax.Array  # [S] int32, the token drawn at step t - 1
    done: jax.Array  # [S] bool, the slot's row ended (or the slot is empty)
    rows: jax.Array  # [S] int32, the prompt each slot decodes (N: none yet)
    start: jax.Array  # [S] int32, the position of response token 0
    budget: jax.Array  # [S] int32, the row's token limit
    cache: KVCache  # S rows of P + T slots, index [S]
    tokens: jax.Array  # [N, T] int32
    logprobs: jax.Array  # [N, T] f32
    mask: jax.Array  # [N, T] int32


def empty_slots(
    config: Any,  # DecoderConfig
    *,
    slots: int,
    num_prompts: int,
    prompt_len: int,
    max_new_tokens: int,
    pad_id: int,
    dtype: Any = jnp.float32,
) -> SlotState:
    """S empty (done) slots with a zero cache of P + T slots each, and empty [N, T] outputs."""
    steps = max_new_tokens
    cache = init_cache(config, jnp.zeros((slots, prompt_len + steps), jnp.int32), dtype=dtype)
    zeros = jnp.zeros((slots,), jnp.int32)
    return SlotState(
        t=zeros,
        previous=zeros,
        done=jnp.ones((slots,), bool),
        rows=jnp.full((slots,), num_prompts, jnp.int32),
        start=zeros,
        budget=zeros,
        cache=cache._replace(index=zeros + prompt_len),
        tokens=jnp.full((num_prompts, steps), pad_id, jnp.int32),
        logprobs=jnp.zeros((num_prompts, steps), jnp.float32),
        mask=jnp.zeros((num_prompts, steps), jnp.int32),
    )


def _emit(
    state: SlotState,
    logits: jax.Array,  # [S', V] the next-token logits of S' slots (all, or the admitted)
    select: jax.Array,  # [S'] int32, which slots these are (ids >= S are dropped)
    *,
    key: jax.Array,
    draw: Any,  # draw_tokens with the sampling settings bound
    temperature: float,
    eos_ids: jax.Array,  # [E] int32
) -> SlotState:
    """Draws the next token of the selected slots' rows at each row's own step, writes it to
    the outputs at the row's index, and advances the slots that were still running."""
    num_prompts, steps = state.tokens.shape
    t = state.t.at[select].get(mode="fill", fill_value=0)
    rows = state.rows.at[select].get(mode="fill", fill_value=num_prompts)
    done = state.done.at[select].get(mode="fill", fill_value=True)
    budget = state.budget.at[select].get(mode="fill", fill_value=0)
    keys = row_keys(key, rows, t) if temperature > 0 else key
    token, logp = draw_with_logprobs(logits, keys, draw=draw, temperature=temperature)
    emitted = ~done
    out_row = jnp.where(emitted, rows, num_prompts)  # rows that ended write nothing
    column = jnp.minimum(t, steps - 1)
    write = dict(mode="drop")
    next_t = jnp.where(emitted, t + 1, t)
    ended = done | jnp.isin(token, eos_ids) | (next_t >= budget)
    return state._replace(
        t=state.t.at[select].set(next_t, **write),
        previous=state.previous.at[select].set(jnp.where(emitted, token, 0), **write),
        done=state.done.at[select].set(ended, **write),
        tokens=state.tokens.at[out_row, column].set(token, **write),
        logprobs=state.logprobs.at[out_row, column].set(logp, **write),
        mask=state.mask.at[out_row, column].set(1, **write),
    )


def admit(
    model: nn.Module,
    params: Any,
    state: SlotState,
    prompt_ids: chex.Array,  # [R, P] left-padded
    prompt_mask: chex.Array,  # [R, P]
    rows: chex.Array,  # [R] int32 the prompts' indices (N: an unused entry)
    slots: chex.Array,  # [R] int32 the free slots they go to (S: an unused entry)
    budget: chex.Array,  # [R] int32 each prompt's token limit
    key: chex.PRNGKey,
    *,
    draw: Any,
    temperature: float,
    eos_ids: jax.Array,
) -> SlotState:
    """Prefills R prompts into R slots: their cache rows get the prompts' keys and values in
    slots 0..P-1 (the response slots after them are rewritten as decoding reaches them, and
    causal masking hides what a previous row left there), and each draws its step-0 token."""
    chex.assert_rank([prompt_ids, prompt_mask], 2)
    chex.assert_equal_shape([prompt_ids, prompt_mask])
    chex.assert_shape([rows, slots, budget], (prompt_ids.shape[0],))
    prompt_len = prompt_ids.shape[1]
    prompt_mask = prompt_mask.astype(jnp.int32)
    fresh = init_cache(model.config, prompt_mask, dtype=state.cache.keys.dtype)
    logits, fresh = prefill(model, params, prompt_ids, prompt_mask, fresh)
    cache = state.cache
    visible = jnp.concatenate(
        [prompt_mask, jnp.ones((len(rows), cache.key_mask.shape[1] - prompt_len), jnp.int32)], 1
    )
    drop = dict(mode="drop")
    cache = KVCache(
        keys=cache.keys.at[:, slots, :, :prompt_len].set(fresh.keys, **drop),
        values=cache.values.at[:, slots, :, :prompt_len].set(fresh.values, **drop),
        key_mask=cache.key_mask.at[slots].set(visible, **drop),
        index=cache.index,
    )
    budget = jnp.asarray(budget, jnp.int32)
    state = state._replace(
        t=state.t.at[slots].set(0, **drop),
        done=state.done.at[slots].set(budget <= 0, **drop),
        rows=state.rows.at[slots].set(rows, **drop),
        start=state.start.at[slots].set(jnp.sum(prompt_mask, axis=1), **drop),
        budget=state.budget.at[slots].set(budget, **drop),
        cache=cache,
    )
    return _emit(
        state, logits[:, 0], slots, key=key, draw=draw, temperature=temperature, eos_ids=eos_ids
    )


def _step(model: nn.Module, params: Any, s: SlotState, key: chex.PRNGKey, **emit: Any) -> SlotState:
    """One token of every slot: slot s feeds its previous token at position start + t - 1 and
    writes its key and value to cache slot P + t - 1 (its own `KVCache.index`)."""
    prompt_len = s.cache.key_mask.shape[1] - s.tokens.shape[1]
    cache = s.cache._replace(index=prompt_len + jnp.maximum(s.t - 1, 0))
    logits, cache = model.apply(
        {"params": params},
        s.previous[:, None],
        positions=(s.start + s.t - 1)[:, None],
        cache=cache,
    )
    every_slot = jnp.arange(s.t.shape[0], dtype=jnp.int32)
    return _emit(s._replace(cache=cache), logits[:, 0], every_slot, key=key, **emit)


def decode(
    model: nn.Module,
    params: Any,
    state: SlotState,
    key: chex.PRNGKey,
    refill_at: chex.Array,  # [] int32: stop once this many slots are free
    **emit: Any,  # draw, temperature, eos_ids
) -> SlotState:
    """Steps every slot (one token each, `_step`) while a row is running and fewer than
    `refill_at` slots are free."""

    def running(s: SlotState) -> jax.Array:
        return jnp.any(~s.done) & (jnp.sum(s.done) < refill_at)

    return jax.lax.while_loop(running, lambda s: _step(model, params, s, key, **emit), state)


def drain(
    model: nn.Module,
    params: Any,
    state: SlotState,
    key: chex.PRNGKey,
    *,
    min_rows: int = 8,
    **emit: Any,  # draw, temperature, eos_ids
) -> SlotState:
    """Decodes the last rows to their ends once no prompt waits, compacting as
    `rlr.sampling.sample` does: at each size of `compaction_sizes(S)` the loop runs while more
    rows are live than the next size holds, then the live slots are gathered into the next."""
    sizes = compaction_sizes(state.t.shape[0], min_rows=min_rows)
    for i, size in enumerate(sizes):
        if i:
            state = keep_live_rows(state, size, _SLOT_FIELDS)
        following = sizes[i + 1] if i + 1 < len(sizes) else 0
        state = jax.lax.while_loop(
            lambda s, limit=following: jnp.sum(~s.done) > limit,
            lambda s: _step(model, params, s, key, **emit),
            state,
        )
    return state


class ContinuousSampler:
    """Samples N prompts through `slots` decode slots (continuous batching); the same call and
    output as `rlr.sampling.Sampler`: `sampler(params, prompt_ids [N, P], prompt_mask, key,
    budget=None)` -> SampleOutput [N, T].

    `refill_rows` (R, default max(1, slots // 8)) is how many prompts one prefill admits: the
    decode program runs until R slots are free, then the next R prompts are prefilled. A
    smaller R keeps slots busier at the cost of more, smaller prefills. `unroll_layers` as in
    `Sampler` (each program slices the layer weights once per call). Compiles one `admit`,
    one `decode` and one `drain` program per (N, P) (`traces` counts them). Single-process
    only: the host gathers each admitted prompt from the [N, P] batch.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        slots: int,
        max_new_tokens: int,
        eos_id: int | Sequence[int],
        pad_id: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        refill_rows: int | None = None,
        unroll_layers: bool = True,
    ):
        if slots < 1 or max_new_tokens < 1:
            raise ValueError(f"need slots, max_new_tokens >= 1; got {slots}, {max_new_tokens}")
        refill_rows = max(1, slots // 8) if refill_rows is None else refill_rows
        if not 1 <= refill_rows <= slots:
            raise ValueError(f"refill_rows must be in [1, slots={slots}]; got {refill_rows}")
        if temperature < 0 or top_k < 0 or not 0.0 < top_p <= 1.0:
            raise ValueError(
                "need temperature >= 0, top_k >= 0 and 0 < top_p <= 1; got "
                f"temperature={temperature}, top_k={top_k}, top_p={top_p}"
            )
        self.model = model
        self.unroll_layers = unroll_layers
        self.slots, self.refill_rows = slots, refill_rows
        self.max_new_tokens, self.pad_id = max_new_tokens, pad_id
        self.eos_ids = (eos_id,) if isinstance(eos_id, int) else tuple(eos_id)
        self.traces = 0
        settings = dict(
            draw=functools.partial(draw_tokens, temperature=temperature, top_k=top_k, top_p=top_p),
            temperature=temperature,
        )

        def counted(fn):
            def traced(*args):
                self.traces += 1  # runs once per compilation, never per call
                eos = jnp.asarray(self.eos_ids, jnp.int32)
                params, rest = args[0], args[1:]
                network = unrolled_for_decoding(model, params) if unroll_layers else (model, params)
                return fn(*network, *rest, eos_ids=eos, **settings)

            return traced

        self._admit = jax.jit(counted(admit), donate_argnums=(1,))
        self._decode = jax.jit(counted(decode), donate_argnums=(1,))
        # Not donated: compaction gathers the slots into smaller arrays, so XLA could reuse
        # none of the state's buffers but the outputs (and would warn about the rest).
        self._drain = jax.jit(counted(drain))
        self._empty = jax.jit(
            functools.partial(
                empty_slots,
                model.config,
                slots=slots,
                max_new_tokens=max_new_tokens,
                pad_id=pad_id,
                dtype=model.dtype,
            ),
            static_argnames=("num_prompts", "prompt_len"),
        )

    def __call__(
        self,
        params: Any,
        prompt_ids: chex.Array,  # [N, P] left-padded
        prompt_mask: chex.Array,  # [N, P]
        key: chex.PRNGKey,
        budget: chex.Array | None = None,  # [N] int, each row's token limit (None: T)
    ) -> SampleOutput:  # [N, T] each
        """Samples every prompt's response; prompts enter the slots in order 0..N-1."""
        if jax.process_count() > 1:
            raise ValueError("continuous batching runs in one process; unset rollout.decode_slots")
        ids, mask = np.asarray(prompt_ids, np.int32), np.asarray(prompt_mask, np.int32)
        chex.assert_rank([ids, mask], 2)
        chex.assert_equal_shape([ids, mask])
        num, width = ids.shape
        steps = self.max_new_tokens
        limits = np.full(num, steps, np.int32) if budget is None else np.asarray(budget, np.int32)
        chex.assert_shape(limits, (num,))
        R, S = self.refill_rows, self.slots
        # One unused entry at index N: a partial admission's spare rows point at it.
        ids = np.concatenate([ids, np.zeros((1, width), np.int32)])
        mask = np.concatenate([mask, np.ones((1, width), np.int32)])
        limits = np.concatenate([limits, np.zeros(1, np.int32)])
        state = self._empty(num_prompts=num, prompt_len=width)
        waiting = 0  # the next prompt to admit
        while True:
            if waiting < num:
                free = np.flatnonzero(np.asarray(state.done))
                while free.size and waiting < num:
                    take = min(R, free.size, num - waiting)
                    rows = np.full(R, num, np.int32)
                    rows[:take] = np.arange(waiting, waiting + take)
                    slots = np.full(R, S, np.int32)
                    slots[:take] = free[:take]
                    state = self._admit(
                        params, state, ids[rows], mask[rows], rows, slots, limits[rows], key
                    )
                    waiting, free = waiting + take, free[take:]
            left = num - waiting
            if not left:  # the last rows: compact them as they end
                state = self._drain(params, state, key)
                break
            state = self._decode(params, state, key, np.int32(min(R, left)))
        return SampleOutput(tokens=state.tokens, logprobs=state.logprobs, mask=state.mask)

    def lower(
        self,
        params: Any,
        prompt_ids: Any,  # [N, P], an array or a ShapeDtypeStruct
        prompt_mask: Any,  # [N, P]
        key: Any,
        budget: Any = None,  # [N]
    ) -> Any:  # jax.stages.Lowered
        """The decode program for these (possibly abstract) arguments, lowered and not run:
        rlr plan compiles it to size decoding (the KV cache of S slots of P + T positions and
        the [N, T] outputs; admitting R prompts holds less)."""
        del prompt_mask, budget
        num, width = prompt_ids.shape
        state = jax.eval_shape(lambda: self._empty(num_prompts=num, prompt_len=width))
        return self._decode.lower(params, state, key, jax.ShapeDtypeStruct((), jnp.int32))
