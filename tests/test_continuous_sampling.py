"""rlr.continuous_sampling: the same tokens as rlr.sampling.sample, whatever the slots."""

from __future__ import annotations

import functools

import chex
import jax
import numpy as np
import pytest

from rlr import models, sampling
from rlr.continuous_sampling import ContinuousSampler

VOCAB, STEPS, EOS, PAD, N = 48, 10, 3, 0, 13


@pytest.fixture(scope="module")
def lm():
    cfg = models.DecoderConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = models.DecoderForCausalLM(cfg)
    params = models.init_params(model, jax.random.key(1))
    # Sharp logits: greedy paths and EOS are not decided by float noise.
    params = jax.tree.map(lambda x: x * 4.0 if x.ndim == 2 else x, params)
    return model, params


@pytest.fixture(scope="module")
def queue():
    """N left-padded prompts of mixed lengths and per-row budgets (some rows end early)."""
    rng = np.random.RandomState(0)
    width = 6
    ids = np.full((N, width), PAD, np.int32)
    mask = np.zeros((N, width), np.int32)
    for b, n in enumerate(rng.randint(1, width + 1, size=N)):
        ids[b, width - n :] = rng.randint(4, VOCAB, size=n)
        mask[b, width - n :] = 1
    budget = rng.randint(1, STEPS + 1, size=N).astype(np.int32)
    budget[0] = 0  # a row with no budget emits nothing
    return ids, mask, budget


@functools.cache
def reference(model, temperature):
    return sampling.Sampler(
        model, max_new_tokens=STEPS, eos_id=EOS, pad_id=PAD, temperature=temperature, compact=False
    )


def continuous(model, temperature, slots, refill_rows):
    return ContinuousSampler(
        model,
        slots=slots,
        refill_rows=refill_rows,
        max_new_tokens=STEPS,
        eos_id=EOS,
        pad_id=PAD,
        temperature=temperature,
    )


@pytest.mark.parametrize(
    "temperature,slots,refill_rows", [(0.0, 4, 1), (1.0, 4, 3), (1.0, 16, 4), (0.0, 3, 2)]
)
def test_outputs_equal_the_batch_sampler(lm, queue, temperature, slots, refill_rows):
    model, params = lm
    ids, mask, budget = queue
    key = jax.random.key(7)
    want = reference(model, temperature)(params, ids, mask, key, budget)
    got = continuous(model, temperature, slots, refill_rows)(params, ids, mask, key, budget)
    chex.assert_shape([got.tokens, got.logprobs, got.mask], (N, STEPS))
    np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(want.tokens))
    np.testing.assert_array_equal(np.asarray(got.mask), np.asarray(want.mask))
    np.testing.assert_allclose(np.asarray(got.logprobs), np.asarray(want.logprobs), atol=1e-5)
    lengths = np.asarray(got.mask).sum(1)
    assert lengths[0] == 0 and (lengths <= budget).all()
    assert 0 < lengths.sum() < N * STEPS  # rows end at different steps: slots were refilled


def test_a_prompts_tokens_do_not_depend_on_its_slot_or_neighbours(lm, queue):
    model, params = lm
    ids, mask, budget = queue
    key = jax.random.key(3)
    full = continuous(model, 1.0, 4, 2)(params, ids, mask, key, budget)
    # Other prompts beside row 5, other budgets (so other slots free up first) and other slots.
    rng = np.random.RandomState(2)
    others = np.arange(N) != 5
    ids2, budget2 = ids.copy(), budget.copy()
    ids2[others] = np.where(mask[others] > 0, rng.randint(4, VOCAB, size=ids[others].shape), PAD)
    budget2[others] = rng.randint(1, STEPS + 1, size=others.sum())
    moved = continuous(model, 1.0, 3, 1)(params, ids2, mask, key, budget2)
    np.testing.assert_array_equal(np.asarray(moved.tokens)[5], np.asarray(full.tokens)[5])
    assert not np.array_equal(np.asarray(moved.tokens), np.asarray(full.tokens))


def test_compiles_one_admit_one_decode_and_one_drain_program(lm, queue):
    model, params = lm
    ids, mask, budget = queue
    sampler = continuous(model, 1.0, 4, 2)
    for seed in range(3):
        sampler(params, ids, mask, jax.random.key(seed), budget)
    assert sampler.traces == 3  # admit, decode, drain


def test_bad_settings_are_errors(lm):
    with pytest.raises(ValueError, match="refill_rows"):
        continuous(lm[0], 1.0, 4, 5)
    with pytest.raises(ValueError, match="slots"):
        continuous(lm[0], 1.0, 0, 1)
