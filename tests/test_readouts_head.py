"""lm_head_readout against a NumPy loop and against autodiff through the full logits; the
custom-gradient projection against jnp.dot; policy_readout against policy_logits."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rlr
from rlr.models import DecoderConfig, DecoderForCausalLM, init_params
from rlr.models.decoder import projection
from rlr.readouts import chunk_positions, lm_head_readout, policy_logits, policy_readout


def loop_reference(hidden, weight, tokens):
    """Per position, in float64: log softmax(hidden @ weight.T)[token], entropy, argmax."""
    B, T, _ = hidden.shape
    logp, entropy, argmax = np.zeros((B, T)), np.zeros((B, T)), np.zeros((B, T), np.int64)
    for b in range(B):
        for t in range(T):
            z = weight.astype(np.float64) @ hidden[b, t].astype(np.float64)
            log_z = z.max() + np.log(np.sum(np.exp(z - z.max())))
            p = np.exp(z - log_z)
            logp[b, t] = z[tokens[b, t]] - log_z
            entropy[b, t] = -np.sum(p * (z - log_z))
            argmax[b, t] = np.argmax(z)
    return logp, entropy, argmax


def random_inputs(B=3, T=7, D=5, V=11, seed=0):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(B, T, D)).astype(np.float32)
    weight = rng.normal(size=(V, D)).astype(np.float32)
    tokens = rng.integers(0, V, size=(B, T)).astype(np.int32)
    return hidden, weight, tokens


class ReadoutValuesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_loop_reference_for_every_chunking(self):
        hidden, weight, tokens = random_inputs()
        want = loop_reference(hidden, weight, tokens)
        # 1 row a chunk, chunks that do not divide T (7), and one chunk for everything.
        for rows in (1, 3, 6, 512):
            got = self.variant(lambda h, w, t, r=rows: lm_head_readout(h, w, t, chunk_rows=r))(
                hidden, weight, tokens
            )
            chex.assert_shape([got.logprobs, got.entropy, got.argmax], tokens.shape)
            assert got.logprobs.dtype == jnp.float32 and got.argmax.dtype == jnp.int32
            np.testing.assert_allclose(got.logprobs, want[0], atol=1e-5)
            np.testing.assert_allclose(got.entropy, want[1], atol=1e-5)
            np.testing.assert_array_equal(got.argmax, want[2])

    def test_chunk_positions(self):
        assert chunk_positions(8, 255, chunk_rows=512) == 64
        assert chunk_positions(1024, 10, chunk_rows=512) == 1  # never below one position
        assert chunk_positions(2, 7, chunk_rows=512) == 7  # never above T
        assert chunk_positions(16, 80, chunk_rows=512) == 27  # 3 chunks of 27, not 32


class ReadoutGradientTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_gradients_match_autodiff_through_full_logits(self):
        hidden, weight, tokens = random_inputs(B=2, T=5, D=4, V=9, seed=1)
        cotangent = np.random.default_rng(2).normal(size=tokens.shape).astype(np.float32)

        def fused(h, w):
            return jnp.sum(lm_head_readout(h, w, tokens, chunk_rows=4).logprobs * cotangent)

        def full(h, w):
            return jnp.sum(rlr.token_logprobs(h @ w.T, tokens) * cotangent)

        got = self.variant(jax.grad(fused, argnums=(0, 1)))(hidden, weight)
        want = jax.grad(full, argnums=(0, 1))(hidden, weight)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)

    def test_entropy_and_argmax_carry_no_gradient(self):
        hidden, weight, tokens = random_inputs(seed=3)
        grad = jax.grad(lambda h: jnp.sum(lm_head_readout(h, weight, tokens).entropy))(hidden)
        np.testing.assert_array_equal(grad, 0.0)

    def test_bfloat16_inputs(self):
        hidden, weight, tokens = random_inputs(seed=4)
        h16, w16 = jnp.asarray(hidden, jnp.bfloat16), jnp.asarray(weight, jnp.bfloat16)
        got = lm_head_readout(h16, w16, tokens)
        assert got.logprobs.dtype == jnp.float32
        want = loop_reference(np.asarray(h16, np.float32), np.asarray(w16, np.float32), tokens)
        np.testing.assert_allclose(got.logprobs, want[0], atol=1e-4)
        grads = jax.grad(lambda h, w: jnp.sum(lm_head_readout(h, w, tokens).logprobs), (0, 1))(
            h16, w16
        )
        assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]


class ReadoutErrorsTest(chex.TestCase):
    def test_bad_inputs_name_the_argument(self):
        hidden, weight, tokens = random_inputs()
        with pytest.raises(ValueError, match="weight has D=4 .* hidden has D=5"):
            lm_head_readout(hidden, weight[:, :4], tokens)
        with pytest.raises(ValueError, match=r"tokens must have shape \[B, T\]"):
            lm_head_readout(hidden, weight, tokens[0])
        with pytest.raises(ValueError, match="tokens must be integer ids"):
            lm_head_readout(hidden, weight, tokens.astype(np.float32))
        with pytest.raises(ValueError, match="chunk_rows must be >= 1"):
            lm_head_readout(hidden, weight, tokens, chunk_rows=0)


class ProjectionTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_gradients_equal_those_of_a_plain_matmul(self):
        rng = np.random.default_rng(5)
        # In < Out and In > Out take the two orientations of the kernel gradient.
        for d_in, d_out in ((3, 6), (6, 3)):
            x = rng.normal(size=(2, 4, d_in)).astype(np.float32)
            kernel = rng.normal(size=(d_in, d_out)).astype(np.float32)
            cot = rng.normal(size=(2, 4, d_out)).astype(np.float32)
            got = self.variant(
                jax.grad(lambda a, k, c: jnp.sum(projection(a, k) * c), argnums=(0, 1))
            )(x, kernel, cot)
            want = jax.grad(lambda a, k: jnp.sum(jnp.dot(a, k) * cot), argnums=(0, 1))(x, kernel)  # noqa: B023
            np.testing.assert_allclose(projection(x, kernel), x @ kernel, rtol=1e-5, atol=1e-6)
            for g, w in zip(got, want):
                chex.assert_equal_shape([g, w])
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tied", [True, False])
def test_policy_readout_equals_logprobs_of_policy_logits(tied):
    config = DecoderConfig(
        vocab_size=37,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=tied,
    )
    model = DecoderForCausalLM(config)
    params = init_params(model, jax.random.key(0))
    rng = np.random.default_rng(6)
    ids = jnp.asarray(rng.integers(0, 37, size=(3, 9)), jnp.int32)
    # left-padded prompts, right-padded responses
    attn = jnp.asarray([[0, 0, 1, 1, 1, 1, 1, 1, 0], [1] * 9, [0, 1, 1, 1, 1, 1, 0, 0, 0]])
    T = 5
    logits = policy_logits(model, params, ids, attn, T=T)
    readout = policy_readout(model, params, ids, attn, T=T)
    np.testing.assert_allclose(
        readout.logprobs, rlr.token_logprobs(logits, ids[:, -T:]), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(readout.entropy, rlr.entropy_from_logits(logits), atol=1e-5)
    np.testing.assert_array_equal(readout.argmax, jnp.argmax(logits, axis=-1))
