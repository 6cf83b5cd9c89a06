"""Sampling text from a policy: the one sampler factory, prompts to responses in fixed-shape
batches, and reading the responses back (texts, ended-without-EOS flags).

Every command that samples (SFT and PPO evaluation, PPO rollouts, Math-Shepherd labelling,
best-of-N) builds its sampler with `sampler_for` from `SamplingSettings` (a PPO run's from its
`rollout` section, `rollout_settings`) and samples through `sample_prompts` or
rlr.training.pipeline, so pad and EOS ids, the padding of the last batch and the random key of
each batch follow one rule everywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from rlr.continuous_sampling import ContinuousSampler
from rlr.data.segmentation import pad_id_of, unique_token_ids
from rlr.sampling import Sampler
from rlr.training.batching import encode_prompts, map_in_batches, prompt_width


def eos_ids_of(tokenizer: Any, model: Any = None) -> tuple[int, ...]:
    """Every id that ends a response: the tokenizer's EOS and the model config's EOS id(s)
    (HF configs may list several, e.g. `<|im_end|>` and `<|endoftext|>`), in that order."""
    config_eos = getattr(getattr(model, "config", None), "eos_token_id", None)
    ids = unique_token_ids(tokenizer.eos_token_id, config_eos)
    if not ids:
        raise ValueError("neither the tokenizer nor the model config names an EOS token id")
    return ids


def make_sampler(
    model: Any,
    tokenizer: Any | None,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    compact: bool = True,
    min_rows: int = 8,
    decode_slots: int | None = None,
    unroll_layers: bool = True,
) -> Sampler | ContinuousSampler:
    """A jitted sampler for `model` that pads with the tokenizer's pad id and stops at every
    EOS id of `eos_ids_of(tokenizer, model)`; temperature 0 is greedy. compact=True decodes
    only the unfinished rows once they fit a smaller batch (down to `min_rows`; the same
    tokens, see rlr.sampling.sample); False runs every row until the longest one ends. With
    `decode_slots`, a ContinuousSampler of that many slots (continuous batching; the same
    tokens again) instead, and `compact` is not read. `unroll_layers`: decode with the layers
    unrolled (rlr.sampling.unrolled_for_decoding; False keeps a scanned model's scan).

    `tokenizer` None (rlr plan's build from shapes, which may run without the tokenizer):
    pad id 0 and EOS id 0; ids change no shape, so the program's memory is the same."""
    ids = dict(
        max_new_tokens=max_new_tokens,
        eos_id=(0,) if tokenizer is None else eos_ids_of(tokenizer, model),
        pad_id=0 if tokenizer is None else pad_id_of(tokenizer),
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        unroll_layers=unroll_layers,
    )
    if decode_slots is not None:
        return ContinuousSampler(model, slots=decode_slots, **ids)
    return Sampler(model, compact=compact, min_rows=min_rows, **ids)


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """What a sampler draws with: up to T = max_new_tokens tokens a row, at `temperature` (0:
    greedy), filtered by top_k / top_p (0 / 1.0: off), compacting rows (`compact`) or not, or
    through `decode_slots` decode slots (continuous batching; None: a batch sampler), with
    the layers unrolled for decoding (`unroll_layers`) or scanned."""

    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    compact: bool = True
    decode_slots: int | None = None
    unroll_layers: bool = True


def rollout_settings(rollout: Any, *, temperature: float | None = None) -> SamplingSettings:
    """A PPO run's sampling settings, from its `rollout` section (RolloutSpec); `temperature`
    replaces the rollout's (evaluation samples greedily at 0, and at 1)."""
    return SamplingSettings(
        max_new_tokens=rollout.max_new_tokens,
        temperature=rollout.temperature if temperature is None else temperature,
        top_k=rollout.top_k,
        top_p=rollout.top_p,
        compact=rollout.compacting,
        decode_slots=rollout.decode_slots,
        unroll_layers=rollout.unroll_layers,
    )


def sampler_for(
    model: Any, tokenizer: Any | None, settings: SamplingSettings
) -> Sampler | ContinuousSampler:
    """The sampler of `model` with `settings`: the one place a command makes its sampler
    (`make_sampler`'s pad and EOS ids)."""
    return make_sampler(model, tokenizer, **dataclasses.asdict(settings))


class SampledBatch(NamedTuple):
    """Prompts and sampled responses as NumPy arrays, one row per prompt (R rows)."""

    prompt_ids: np.ndarray  # [R, P] int32, left-padded
    prompt_mask: np.ndarray  # [R, P] int32
    tokens: np.ndarray  # [R, T] int32, right-padded
    mask: np.ndarray  # [R, T] int32, 1 on generated tokens (EOS included)


def sample_prompts(
    sampler: Sampler,
    params: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    batch_size: int,
    key: jax.Array,
    prompt_tokens: int | None = None,
    progress: Any = None,
) -> SampledBatch:
    """One sampled response per prompt, in fixed [batch_size, P] sampler calls.

    Prompts are left-padded to P = `prompt_tokens` (a longer prompt keeps its last P tokens),
    or to `rlr.training.batching.prompt_width(prompts)` when None. Batch c draws with
    fold_in(key, c); the last batch is padded by repeating its last prompt
    (rlr.training.batching.map_in_batches).
    `progress` (a tqdm bar or None) advances by the real rows of each batch.
    """
    if not prompts:
        raise ValueError("sample_prompts needs at least one prompt")
    width = prompt_tokens or prompt_width(tokenizer, prompts)
    ids, mask, _ = encode_prompts(tokenizer, prompts, prompt_len=width)

    def draw(batch_ids, batch_mask, batch_key):
        out = sampler(params, batch_ids, batch_mask, batch_key)
        return out.tokens, out.mask

    tokens, out_mask = map_in_batches(
        draw, (ids, mask), batch_size=batch_size, key=key, progress=progress
    )
    return SampledBatch(ids, mask, tokens.astype(np.int32), out_mask.astype(np.int32))


def decode_responses(tokenizer: Any, tokens: np.ndarray, mask: np.ndarray) -> list[str]:
    """Response texts from sampled [B, T] tokens (special tokens such as EOS dropped)."""
    return [
        tokenizer.decode(row[: int(valid.sum())].tolist(), skip_special_tokens=True)
        for row, valid in zip(np.asarray(tokens), np.asarray(mask))
    ]


def ended_without_eos(
    tokens: np.ndarray,  # [B, T] sampled response tokens
    mask: np.ndarray,  # [B, T] 1 for generated tokens (a prefix of each row)
    eos_id: int | Sequence[int],
) -> np.ndarray:  # [B] bool
    """Rows whose last generated token is not an EOS: they hit the token limit (truncated)."""
    tokens, mask = np.asarray(tokens), np.asarray(mask)
    lengths = mask.sum(axis=1).astype(int)
    last = tokens[np.arange(len(tokens)), np.maximum(lengths - 1, 0)]
    return ~np.isin(last, np.atleast_1d(eos_id))
