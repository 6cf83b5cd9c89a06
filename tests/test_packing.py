"""rlr.packing: packed rows hold every real token once, and packed readouts equal padded ones."""

from __future__ import annotations

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlr import models
from rlr.packing import next_in_segment, pack_rows, packing_ratio, unpack
from rlr.readouts import critic_values, policy_readout, score_logits

VOCAB, P, T = 40, 5, 7


def row_layout(seed: int, batch: int = 6):
    """Left-padded prompts ++ right-padded responses of mixed lengths: ids, attention mask,
    response mask."""
    rng = np.random.RandomState(seed)
    ids = np.zeros((batch, P + T), np.int32)
    attention = np.zeros((batch, P + T), np.int32)
    response = np.zeros((batch, T), np.float32)
    for b in range(batch):
        p, r = rng.randint(1, P + 1), rng.randint(0, T + 1)
        attention[b, P - p : P + r] = 1
        response[b, :r] = 1
        ids[b] = np.where(attention[b] > 0, rng.randint(1, VOCAB, size=P + T), 0)
    return ids, attention, response


@hypothesis.settings(deadline=None, max_examples=40)
@hypothesis.example(lengths=[0], row_multiple=2)  # no real token: still a multiple of rows
@hypothesis.given(
    lengths=st.lists(st.integers(0, 9), min_size=1, max_size=12),
    row_multiple=st.integers(1, 4),
)
def test_every_real_token_lands_once_in_its_own_segment(lengths, row_multiple):
    width = 9
    rng = np.random.RandomState(len(lengths))
    mask = np.zeros((len(lengths), width), np.int32)
    for b, n in enumerate(lengths):
        start = rng.randint(0, width - n + 1)
        mask[b, start : start + n] = 1
    ids = np.where(mask > 0, rng.randint(1, 99, size=mask.shape), 0).astype(np.int32)
    packed = pack_rows(ids, mask, row_multiple=row_multiple)
    rows = packed.input_ids.shape[0]
    assert rows % row_multiple == 0
    assert rows <= max(1, -(-len(lengths) // row_multiple) * row_multiple)
    flat = np.append(packed.input_ids.reshape(-1), 0)  # unpack's fill: 0 on padding
    np.testing.assert_array_equal(flat[packed.source], ids)
    real = packed.source[mask > 0]
    assert len(np.unique(real)) == real.size and (packed.source[mask == 0] == rows * width).all()
    assert (packed.segment_ids > 0).sum() == mask.sum()
    for b in range(len(lengths)):  # positions 0..n-1 in one segment, in the row's order
        flat = packed.source[b][mask[b] > 0]
        np.testing.assert_array_equal(packed.positions.reshape(-1)[flat], np.arange(len(flat)))
        assert len(set(packed.segment_ids.reshape(-1)[flat])) <= 1
        assert len(set(flat // width)) <= 1


def test_fewer_rows_and_bad_lengths():
    ids, attention, _ = row_layout(0, batch=16)
    packed = pack_rows(ids, attention)
    assert packed.input_ids.shape[0] < 16 and packing_ratio(attention, packed) > 1
    with pytest.raises(ValueError, match="L=3"):
        pack_rows(ids, attention, length=3)
    np.testing.assert_array_equal(
        np.asarray(unpack(jnp.asarray(packed.input_ids), packed.source)), ids
    )
    targets = np.asarray(next_in_segment(jax.tree.map(jnp.asarray, packed)))
    assert (targets[packed.segment_ids == 0] == 0).all()


def test_a_process_packs_its_block_into_global_batch_sharded_rows():
    """distributed.packed_rows with one process: pack_minibatch's rows for the mesh's batch
    shards, as batch-sharded global arrays (tests/test_multiprocess.py runs it with two)."""
    from rlr import sharding
    from rlr.packing import pack_minibatch
    from rlr.training import distributed

    ids, attention, _ = row_layout(1, batch=16)
    mesh = sharding.make_mesh(data=1, fsdp=1, tensor=1)
    packed = distributed.packed_rows(mesh, ids, attention, 16)
    want = pack_minibatch(ids, attention, shards=1)
    for got, expected in zip(packed, want):
        assert got.sharding == sharding.batch_sharding(mesh, got.ndim)
        np.testing.assert_array_equal(np.asarray(got), expected)
    np.testing.assert_array_equal(np.asarray(unpack(packed.input_ids, packed.source)), ids)


@pytest.fixture(scope="module")
def networks():
    cfg = models.DecoderConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    policy = models.DecoderForCausalLM(cfg)
    critic = models.DecoderForTokenClassification(cfg, num_labels=1)
    return (
        policy,
        models.init_params(policy, jax.random.key(0)),
        critic,
        models.init_params(critic, jax.random.key(1)),
    )


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_packed_policy_readout_and_gradient_equal_the_padded(networks, temperature):
    policy, params, _, _ = networks
    ids, attention, response = row_layout(1)
    packing = jax.tree.map(jnp.asarray, pack_rows(ids, attention))

    def loss(p, packing):
        out = policy_readout(
            policy, p, ids, attention, T=T, temperature=temperature, packing=packing
        )
        return jnp.sum(out.logprobs * response), out

    (want, padded), grad_want = jax.value_and_grad(loss, has_aux=True)(params, None)
    (got, packed), grad_got = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, packing)
    chex.assert_shape(packed.logprobs, (6, T))
    real = response > 0
    np.testing.assert_allclose(
        np.asarray(packed.logprobs)[real], np.asarray(padded.logprobs)[real], atol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(packed.entropy)[real], np.asarray(padded.entropy)[real], atol=1e-5
    )
    np.testing.assert_array_equal(np.asarray(packed.argmax)[real], np.asarray(padded.argmax)[real])
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    chex.assert_trees_all_close(grad_got, grad_want, atol=1e-5)


def test_packed_critic_values_and_scores_equal_the_padded(networks):
    _, _, critic, params = networks
    ids, attention, response = row_layout(2)
    packing = jax.tree.map(jnp.asarray, pack_rows(ids, attention, row_multiple=2))
    want = critic_values(critic, params, ids, attention, T=T)
    got = critic_values(critic, params, ids, attention, T=T, packing=packing)
    real = attention[:, P - 1 : P - 1 + T] > 0
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=1e-5)
    scores = score_logits(critic, params, ids, attention, packing=packing)
    full = score_logits(critic, params, ids, attention)
    np.testing.assert_allclose(
        np.asarray(scores)[attention > 0], np.asarray(full)[attention > 0], atol=1e-5
    )


def test_segment_ids_refuse_a_cache_or_a_mask(networks):
    policy, params, _, _ = networks
    ids = jnp.ones((1, 4), jnp.int32)
    with pytest.raises(ValueError, match="segment_ids"):
        policy.apply({"params": params}, ids, jnp.ones_like(ids), segment_ids=ids)
