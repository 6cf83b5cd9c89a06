"""rlr.sampling: greedy vs a no-cache argmax loop, logprobs, EOS, padding, keys, retracing."""

from __future__ import annotations

import functools

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rlr
from rlr import models, sampling

VOCAB, STEPS, EOS, PAD = 64, 6, 3, 0


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
    params = models.init_params(model, jax.random.key(0))
    # Sharper logits than init gives, so greedy paths and EOS are not decided by noise.
    params = jax.tree.map(lambda x: x * 4.0 if x.ndim == 2 else x, params)
    return model, params


def left_padded_prompts(lengths, width, seed):
    rng = np.random.RandomState(seed)
    ids = np.full((len(lengths), width), PAD, np.int32)
    mask = np.zeros((len(lengths), width), np.int32)
    for b, n in enumerate(lengths):
        ids[b, width - n :] = rng.randint(4, VOCAB, size=n)
        mask[b, width - n :] = 1
    return ids, mask


@pytest.fixture(scope="module")
def prompts():
    return left_padded_prompts([5, 2, 4], width=5, seed=1)


@pytest.fixture(scope="module")
def greedy(lm):
    return sampling.Sampler(lm[0], max_new_tokens=STEPS, eos_id=EOS, pad_id=PAD, temperature=0.0)


@pytest.fixture(scope="module")
def nucleus(lm):
    return sampling.Sampler(
        lm[0], max_new_tokens=STEPS, eos_id=EOS, pad_id=PAD, temperature=0.8, top_k=20, top_p=0.9
    )


@pytest.fixture(scope="module")
def logprobs_fn(lm):
    return jax.jit(functools.partial(sampling.sequence_logprobs, lm[0]))


def test_greedy_equals_argmax_of_full_forward(lm, greedy, prompts):
    model, params = lm
    ids, mask = prompts
    out = greedy(params, ids, mask, jax.random.key(0))
    chex.assert_shape([out.tokens, out.logprobs, out.mask], (3, STEPS))
    forward = jax.jit(model.apply)
    width = ids.shape[1] + STEPS
    for b in range(ids.shape[0]):
        sequence = list(ids[b][mask[b] > 0])
        for t in range(STEPS):
            if not out.mask[b, t]:
                break
            # Right-padded to one width so the no-cache forward compiles once.
            row = np.full((1, width), PAD, np.int32)
            row[0, : len(sequence)] = sequence
            row_mask = (np.arange(width) < len(sequence)).astype(np.int32)[None]
            logits = forward({"params": params}, jnp.asarray(row), jnp.asarray(row_mask))
            sequence.append(int(jnp.argmax(logits[0, len(sequence) - 1])))
            assert out.tokens[b, t] == sequence[-1], (b, t)


def test_logprobs_match_sequence_logprobs(lm, nucleus, prompts):
    model, params = lm
    ids, mask = prompts
    out = nucleus(params, ids, mask, jax.random.key(4))
    # the sampler's temperature (0.8); its top-k / top-p filter is not in the log-probs
    logprobs_fn = jax.jit(functools.partial(sampling.sequence_logprobs, model, temperature=0.8))
    want = logprobs_fn(params, ids, mask, out.tokens, out.mask)
    np.testing.assert_allclose(out.logprobs, want, atol=1e-5)
    assert np.all(np.asarray(out.logprobs)[np.asarray(out.mask) > 0] < 0)


def test_eos_ends_rows_and_is_kept(lm, prompts):
    model, params = lm
    ids, mask = prompts
    # Two stop ids and 18 rows sampled at temperature 1: some rows stop early, some do not.
    sampler = sampling.Sampler(model, max_new_tokens=12, eos_id=(EOS, 5), pad_id=PAD)
    ids = np.tile(ids, (6, 1))
    mask = np.tile(mask, (6, 1))
    out = jax.tree.map(np.asarray, sampler(params, ids, mask, jax.random.key(2)))
    ended = 0
    for b in range(ids.shape[0]):
        stops = np.nonzero(np.isin(out.tokens[b], (EOS, 5)) & (out.mask[b] > 0))[0]
        length = stops[0] + 1 if stops.size else 12
        ended += bool(stops.size)
        np.testing.assert_array_equal(out.mask[b], np.arange(12) < length)
        assert np.all(out.tokens[b, length:] == PAD)
        assert np.all(out.logprobs[b, length:] == 0)
    assert ended > 0


def test_padding_does_not_change_samples(lm, nucleus, prompts):
    _, params = lm
    ids, mask = prompts
    wider_ids = np.concatenate([np.full((3, 4), PAD, np.int32), ids], axis=1)
    wider_mask = np.concatenate([np.zeros((3, 4), np.int32), mask], axis=1)
    key = jax.random.key(7)
    a = nucleus(params, ids, mask, key)
    b = nucleus(params, wider_ids, wider_mask, key)
    chex.assert_trees_all_close(a, b, atol=1e-5)


def test_same_key_same_samples_and_no_retracing(lm, nucleus, prompts):
    _, params = lm
    ids, mask = prompts
    first = nucleus(params, ids, mask, jax.random.key(11))
    traces = nucleus.traces
    again = nucleus(params, ids, mask, jax.random.key(11))
    other = nucleus(params, ids, mask, jax.random.key(12))
    assert nucleus.traces == traces
    chex.assert_trees_all_equal(first, again)
    assert not np.array_equal(first.tokens, other.tokens)


def test_scan_decoding_gives_the_same_samples(lm, nucleus, prompts):
    model, params = lm
    ids, mask = prompts
    scan = sampling.Sampler(
        model,
        max_new_tokens=STEPS,
        eos_id=EOS,
        pad_id=PAD,
        temperature=0.8,
        top_k=20,
        top_p=0.9,
        loop="scan",
        compact=False,
    )
    key = jax.random.key(5)
    chex.assert_trees_all_close(scan(params, ids, mask, key), nucleus(params, ids, mask, key))


def test_unrolled_decoding_gives_the_same_samples_as_the_scan(lm, nucleus, prompts):
    """The default sampler decodes the scanned model with its layers unrolled; the scanned
    decode loop (unroll_layers=False) and the continuous sampler either way draw the same."""
    from rlr.continuous_sampling import ContinuousSampler

    model, params = lm
    assert model.scan_layers
    ids, mask = prompts
    key = jax.random.key(5)
    settings = dict(max_new_tokens=STEPS, eos_id=EOS, pad_id=PAD, temperature=0.8, top_k=20)
    scanned = sampling.Sampler(model, top_p=0.9, unroll_layers=False, **settings)
    want = scanned(params, ids, mask, key)
    chex.assert_trees_all_close(nucleus(params, ids, mask, key), want, atol=1e-5)
    for unroll in (True, False):
        slots = ContinuousSampler(model, slots=2, top_p=0.9, unroll_layers=unroll, **settings)
        chex.assert_trees_all_close(slots(params, ids, mask, key), want, atol=1e-5)


def test_unrolled_for_decoding_slices_the_layer_stack(lm):
    model, params = lm
    flat, flat_params = sampling.unrolled_for_decoding(model, params)
    assert not flat.scan_layers and flat.config == model.config
    layers = params["model"]["layers"]
    assert "layers" not in flat_params["model"]
    for i in range(model.config.num_hidden_layers):
        got = flat_params["model"][f"layers_{i}"]
        chex.assert_trees_all_equal(got, jax.tree.map(lambda leaf, i=i: leaf[i], layers))
    again, same_params = sampling.unrolled_for_decoding(flat, flat_params)
    assert again is flat and same_params is flat_params  # nothing to unroll


def test_sample_traces_once_under_assert_max_traces(lm, prompts):
    model, params = lm
    ids, mask = prompts

    def greedy_two(params, ids, mask, key):
        return sampling.sample(
            model, params, ids, mask, key, max_new_tokens=2, eos_id=EOS, pad_id=PAD, temperature=0
        )

    fn = jax.jit(chex.assert_max_traces(greedy_two, n=1))
    for seed in range(3):
        fn(params, ids, mask, jax.random.key(seed))


def reference_filter(logits, top_k, top_p):
    out = logits.copy()
    for b, row in enumerate(logits):
        order = sorted(range(len(row)), key=lambda i: -row[i])
        keep = set(order[:top_k]) if top_k else set(order)
        kept_logits = [row[i] for i in order if i in keep]
        probs = np.exp(np.array(kept_logits) - max(kept_logits))
        probs /= probs.sum()
        mass, nucleus = 0.0, set()
        for i, p in zip([i for i in order if i in keep], probs):
            if mass >= top_p:
                break
            nucleus.add(i)
            mass += p
        for i in range(len(row)):
            if i not in nucleus:
                out[b, i] = -np.inf
    return out


@hypothesis.settings(deadline=None, max_examples=25)
@hypothesis.given(
    seed=st.integers(0, 10_000),
    top_k=st.integers(0, 12),
    top_p=st.floats(0.05, 1.0),
)
def test_filter_logits_matches_loop(seed, top_k, top_p):
    logits = np.random.RandomState(seed).normal(size=(3, 12)).astype(np.float32) * 2
    got = sampling.filter_logits(jnp.asarray(logits), top_k=top_k, top_p=top_p)
    np.testing.assert_allclose(got, reference_filter(logits, top_k, top_p), atol=1e-6)


def test_draw_tokens_follows_the_tempered_distribution():
    logits = jnp.asarray([[2.0, 1.0, 0.0, -1.0]])
    draws = jax.vmap(
        lambda k: sampling.draw_tokens(logits, k, temperature=2.0)[0],
    )(jax.random.split(jax.random.key(0), 20_000))
    freq = np.bincount(np.asarray(draws), minlength=4) / 20_000
    want = np.asarray(jax.nn.softmax(logits[0] / 2.0))
    np.testing.assert_allclose(freq, want, atol=0.015)
    greedy = sampling.draw_tokens(logits, jax.random.key(0), temperature=0.0)
    assert int(greedy[0]) == 0
    top2 = jax.vmap(lambda k: sampling.draw_tokens(logits, k, temperature=1.0, top_k=2)[0])(
        jax.random.split(jax.random.key(1), 4_000)
    )
    freq = np.bincount(np.asarray(top2), minlength=4) / 4_000
    np.testing.assert_allclose(freq, [1 / (1 + np.exp(-1)), 1 / (1 + np.exp(1)), 0, 0], atol=0.03)


def test_token_logprobs_matches_loop():
    rng = np.random.RandomState(0)
    logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
    tokens = rng.randint(0, 5, size=(2, 3))
    got = rlr.token_logprobs(jnp.asarray(logits), jnp.asarray(tokens))
    for b in range(2):
        for t in range(3):
            row = logits[b, t].astype(np.float64)
            want = row[tokens[b, t]] - np.log(np.exp(row).sum())
            np.testing.assert_allclose(got[b, t], want, atol=1e-5)


def test_bad_settings_raise(lm):
    with pytest.raises(ValueError, match="top_p"):
        sampling.Sampler(lm[0], max_new_tokens=4, eos_id=EOS, pad_id=PAD, top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sampling.Sampler(lm[0], max_new_tokens=0, eos_id=EOS, pad_id=PAD)
    with pytest.raises(ValueError, match="temperature"):
        sampling.Sampler(lm[0], max_new_tokens=4, eos_id=EOS, pad_id=PAD, temperature=-1.0)


# Compaction: several stop ids so that rows end at many different steps.
STOPS, LONG = tuple(range(3, 9)), 24


@pytest.fixture(scope="module")
def many_prompts():
    rng = np.random.RandomState(3)
    return left_padded_prompts(rng.randint(1, 7, size=32), width=6, seed=4)


def stop_sampler(model, **kwargs):
    settings = dict(max_new_tokens=LONG, eos_id=STOPS, pad_id=PAD, min_rows=2)
    return sampling.Sampler(model, **{**settings, **kwargs})


def test_compaction_sizes():
    assert sampling.compaction_sizes(64) == (64, 32, 16, 8)
    assert sampling.compaction_sizes(256, min_rows=16) == (256, 128, 64, 32, 16)
    assert sampling.compaction_sizes(48, min_rows=8) == (48, 24, 12)
    assert sampling.compaction_sizes(8) == (8,)
    assert sampling.compaction_sizes(3, min_rows=1) == (3, 2, 1)
    assert sampling.compaction_sizes(64, min_rows=1, shards=8) == (64, 32, 16, 8)
    assert sampling.compaction_sizes(24, min_rows=1, shards=8) == (24, 16, 8)
    with pytest.raises(ValueError, match="min_rows"):
        sampling.compaction_sizes(8, min_rows=0)


@pytest.mark.parametrize(
    "settings",
    [dict(temperature=1.0), dict(temperature=0.9, top_k=12, top_p=0.8), dict(temperature=0.0)],
    ids=["t1", "topk_topp", "greedy"],
)
def test_compaction_does_not_change_any_row(lm, many_prompts, logprobs_fn, settings):
    model, params = lm
    ids, mask = many_prompts
    key = jax.random.key(21)
    full = stop_sampler(model, compact=False, **settings)(params, ids, mask, key)
    packed_sampler = stop_sampler(model, **settings)
    packed = packed_sampler(params, ids, mask, key)
    lengths = np.asarray(full.mask).sum(axis=1)
    # The batch shrinks (32 -> 16 -> ...) only if rows end at many different steps, and at
    # least half of them before the longest.
    assert len(set(lengths.tolist())) > 4, lengths
    assert np.sum(lengths < lengths.max()) >= len(lengths) // 2, lengths
    np.testing.assert_array_equal(packed.tokens, full.tokens)
    np.testing.assert_array_equal(packed.mask, full.mask)
    np.testing.assert_allclose(packed.logprobs, full.logprobs, atol=1e-5)
    temperature = settings["temperature"] or 1.0  # greedy: the temperature-1 log-probs
    if temperature != 1.0:
        logprobs_fn = functools.partial(sampling.sequence_logprobs, model, temperature=temperature)
        logprobs_fn = jax.jit(logprobs_fn)
    want = logprobs_fn(params, ids, mask, packed.tokens, packed.mask)
    np.testing.assert_allclose(packed.logprobs, want, atol=1e-5)
    for seed in range(2):  # new keys, one program
        packed_sampler(params, ids, mask, jax.random.key(seed))
    assert packed_sampler.traces == 1


def test_a_row_draws_with_its_own_keys(lm, many_prompts):
    model, params = lm
    ids, mask = many_prompts
    key = jax.random.key(5)
    out = stop_sampler(model)(params, ids, mask, key)
    # Row 0 alone is not row 0 of the batch (its keys come from its row index), but the
    # batch's rows are the same whatever the other rows are.
    other = ids.copy()
    other[1:] = np.roll(ids[1:], 3, axis=0)
    other_mask = mask.copy()
    other_mask[1:] = np.roll(mask[1:], 3, axis=0)
    again = stop_sampler(model)(params, other, other_mask, key)
    np.testing.assert_array_equal(again.tokens[0], out.tokens[0])
    np.testing.assert_array_equal(again.mask[0], out.mask[0])


def test_budget_stops_rows_early(lm, many_prompts):
    model, params = lm
    ids, mask = many_prompts
    key = jax.random.key(8)
    sampler = stop_sampler(model)
    free = jax.tree.map(np.asarray, sampler(params, ids, mask, key))
    budget = np.random.RandomState(0).randint(0, LONG + 3, size=len(ids)).astype(np.int32)
    cut = jax.tree.map(np.asarray, sampler(params, ids, mask, key, budget))
    free_lengths = free.mask.sum(axis=1)
    np.testing.assert_array_equal(cut.mask.sum(axis=1), np.minimum(free_lengths, budget))
    # Up to the budget a row is the same row: the budget only ends it.
    np.testing.assert_array_equal(cut.tokens, np.where(cut.mask > 0, free.tokens, PAD))
    np.testing.assert_allclose(cut.logprobs, free.logprobs * cut.mask, atol=1e-5)
    plain = stop_sampler(model, compact=False)(params, ids, mask, key, jnp.asarray(budget))
    np.testing.assert_array_equal(plain.tokens, cut.tokens)
    assert sampler.traces == 2  # one program without a budget, one with


EIGHT_DEVICES = """
import os, sys
os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"  # after the suite's
os.environ["JAX_PLATFORMS"] = "cpu"
import jax, numpy as np
from rlr import models, sampling, sharding

cfg = models.DecoderConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
model = models.DecoderForCausalLM(cfg)
params = jax.tree.map(lambda x: x * 4.0 if x.ndim == 2 else x,
                      models.init_params(model, jax.random.key(0)))
rng = np.random.RandomState(0)
ids = rng.randint(9, 64, size=(32, 6)).astype(np.int32)
mask = (np.arange(6)[None] >= rng.randint(0, 5, size=(32, 1))).astype(np.int32)
ids = ids * mask
key = jax.random.key(3)
settings = dict(max_new_tokens=24, eos_id=tuple(range(3, 9)), pad_id=0, min_rows=1)
want = sampling.Sampler(model, compact=False, **settings)(params, ids, mask, key)
for shape, shards in [(dict(data=8), 8), (dict(data=2, fsdp=2, tensor=2), 4)]:
    mesh = sharding.make_mesh(**shape)
    put = lambda x: jax.device_put(x, sharding.batch_sharding(mesh, x.ndim))
    sampler = sampling.Sampler(model, **settings)
    out = sampler(params, put(ids), put(mask), key)
    assert sampling.batch_shards(put(ids)) == shards, shape
    np.testing.assert_array_equal(out.tokens, want.tokens)
    np.testing.assert_array_equal(out.mask, want.mask)
    np.testing.assert_allclose(out.logprobs, want.logprobs, atol=1e-5)
    print("ok", shape, out.tokens.sharding.spec)
"""


def test_compaction_on_a_sharded_batch():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", EIGHT_DEVICES], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("ok") == 2, proc.stdout
