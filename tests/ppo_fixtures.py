"""Tiny PPO models and a fake rollout shared by the PPO tests (and their 8-device subprocess)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rlr.models import DecoderConfig, DecoderForCausalLM, DecoderForTokenClassification, init_params
from rlr.training.ppo_core import PPOModels, Rollout

CONFIG = DecoderConfig(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
    max_position_embeddings=64,
)
B, P, T, K = 8, 6, 10, 3


def models(with_prm: bool = True, with_orm: bool = True) -> PPOModels:
    critic = DecoderForTokenClassification(CONFIG, num_labels=1)
    return PPOModels(
        policy=DecoderForCausalLM(CONFIG),
        critic=critic,
        prm=critic if with_prm else None,
        orm=critic if with_orm else None,
    )


def params(seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), 4)
    m = models()
    policy = init_params(m.policy, keys[0])
    return (
        {"policy": policy, "critic": init_params(m.critic, keys[1])},
        {
            "reference": jax.tree.map(jnp.copy, policy),  # never alias donated buffers
            "prm": init_params(m.critic, keys[2]),
            "orm": init_params(m.critic, keys[3]),
        },
    )


def rollout(seed: int = 0) -> Rollout:
    rng = np.random.default_rng(seed)
    prompt_len = rng.integers(2, P + 1, size=B)
    resp_len = rng.integers(1, T + 1, size=B)
    resp_len[0] = T  # one full-length row
    ids = rng.integers(1, CONFIG.vocab_size, size=(B, P + T))
    attn = np.zeros((B, P + T), np.int32)
    for b in range(B):
        attn[b, P - prompt_len[b] : P + resp_len[b]] = 1
    ids = np.where(attn > 0, ids, 0)
    response_mask = attn[:, P:].astype(np.float32)
    step_end = np.zeros((B, K), np.int32)
    step_mask = np.zeros((B, K), np.float32)
    for b in range(B):
        n = min(K, resp_len[b])
        ends = np.sort(rng.choice(resp_len[b], size=n, replace=False))
        ends[-1] = resp_len[b] - 1
        step_end[b, :n] = ends
        step_mask[b, :n] = 1
    success = (rng.random(B) < 0.5).astype(np.float32)
    return Rollout(
        jnp.asarray(ids, jnp.int32),
        jnp.asarray(attn),
        jnp.asarray(response_mask),
        jnp.asarray(success),
        jnp.asarray(step_end),
        jnp.asarray(step_mask),
    )
