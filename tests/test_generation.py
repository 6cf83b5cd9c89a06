"""rlr.training.generation and batching.map_in_batches: the one sampler factory (pad and every
EOS id), prompts to responses in fixed-shape batches, and the one batching rule."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from test_labelling import TINY
from toy_assets import shared_toy_assets

from rlr.data.prompts import build_prompt
from rlr.data.segmentation import pad_id_of
from rlr.data.synthetic import generate_problems
from rlr.training.batching import map_in_batches
from rlr.training.generation import (
    eos_ids_of,
    make_sampler,
    rollout_settings,
    sample_prompts,
    sampler_for,
)
from rlr.training.loading import load_policy_dir
from rlr.training.schemas import RolloutSpec


def test_map_in_batches_matches_a_loop_with_fixed_shapes():
    rows = np.arange(7 * 3).reshape(7, 3)
    other = np.arange(7) * 10
    key = jax.random.key(5)
    seen = []

    def fn(a, b, k):
        seen.append((a.shape, b.shape))
        bits = jax.random.randint(k, (1,), 0, 1000)
        return {"sum": a.sum(axis=1) + b, "bits": np.repeat(np.asarray(bits), len(a))}

    out = map_in_batches(fn, (rows, other), batch_size=3, key=key)
    assert seen == [((3, 3), (3,))] * 3  # every call has the same shape
    np.testing.assert_array_equal(out["sum"], rows.sum(axis=1) + other)
    want_bits = [
        int(jax.random.randint(jax.random.fold_in(key, c), (1,), 0, 1000)[0]) for c in range(3)
    ]
    np.testing.assert_array_equal(out["bits"], np.repeat(want_bits, 3)[:7])


def test_map_in_batches_pads_with_the_last_row_and_checks_its_input():
    calls = []
    map_in_batches(lambda a: calls.append(a.copy()) or a, (np.arange(5),), batch_size=4)
    np.testing.assert_array_equal(calls[1], [4, 4, 4, 4])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        map_in_batches(lambda a: a, (np.arange(3),), batch_size=0)
    with pytest.raises(ValueError, match="arrays differ in rows"):
        map_in_batches(lambda a, b: a, (np.arange(3), np.arange(4)), batch_size=2)
    with pytest.raises(ValueError, match="at least one row"):
        map_in_batches(lambda a: a, (np.zeros(0),), batch_size=2)


@pytest.fixture(scope="module")
def policy():
    model, params, tokenizer = load_policy_dir(str(shared_toy_assets(**TINY) / "policy"))
    return model, params, tokenizer


def test_eos_ids_are_the_tokenizers_and_the_models(policy):
    model, _, tokenizer = policy
    assert eos_ids_of(tokenizer) == (tokenizer.eos_token_id,)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    chat = model.clone(config=dataclasses.replace(model.config, eos_token_id=(im_end,)))
    assert eos_ids_of(tokenizer, chat) == (tokenizer.eos_token_id, im_end)
    both = model.clone(
        config=dataclasses.replace(model.config, eos_token_id=(im_end, tokenizer.eos_token_id))
    )
    assert eos_ids_of(tokenizer, both) == (tokenizer.eos_token_id, im_end)  # no repeats
    sampler = make_sampler(chat, tokenizer, max_new_tokens=4)
    assert sampler.eos_ids == (tokenizer.eos_token_id, im_end)


def test_sample_prompts_pads_and_drops_padding(policy):
    model, params, tokenizer = policy
    sampler = make_sampler(model, tokenizer, max_new_tokens=12)
    prompts = [build_prompt(p.question) for p in generate_problems(3, seed=3)]
    batch = sample_prompts(sampler, params, tokenizer, prompts, batch_size=8, key=jax.random.key(1))
    assert batch.tokens.shape == (3, 12) and batch.prompt_ids.shape[0] == 3
    assert batch.prompt_ids.shape[1] % 32 == 0
    widths = batch.prompt_mask.sum(axis=1)
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    np.testing.assert_array_equal(widths, lengths)  # nothing cut from the left
    pad = pad_id_of(tokenizer)
    assert np.all(np.where(batch.mask == 0, batch.tokens == pad, True))
    again = sample_prompts(sampler, params, tokenizer, prompts, batch_size=8, key=jax.random.key(1))
    np.testing.assert_array_equal(again.tokens, batch.tokens)  # a function of key and batch size
    assert sampler.traces == 1


@pytest.mark.parametrize("unroll", [True, False])
@pytest.mark.parametrize("slots", [None, 2])
def test_rollout_unroll_layers_reaches_both_samplers(policy, unroll, slots):
    """rollout.unroll_layers (default true) is what the rollout's sampler, batch or
    continuous, decodes with."""
    model, _, tokenizer = policy
    assert RolloutSpec().unroll_layers
    spec = RolloutSpec(unroll_layers=unroll, decode_slots=slots)
    sampler = sampler_for(model, tokenizer, rollout_settings(spec))
    assert type(sampler).__name__ == ("Sampler" if slots is None else "ContinuousSampler")
    assert sampler.unroll_layers is unroll
