"""Training-step throughput: rlr (jitted, donated forward + backward + AdamW) vs HF torch.

Same ~4.5M-parameter Qwen2 as bench_sampling.py, same weights, next-token cross-entropy on
random tokens, AdamW in both (optax / torch.optim). Prints steps/s, the ratio, achieved
GFLOP/s (6 * N_matmul * tokens + causal attention) and that as a fraction of a jnp.dot peak
measured in the same process.

    PYTHONPATH=. python bench/bench_train_step.py [--batch 8] [--seq 256] [--steps 5]
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rlr
from rlr import models

SHAPE = dict(
    vocab_size=8192,
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
)


def matmul_peak(size: int = 1024, repeats: int = 3):
    """A function measuring f32 jnp.dot GFLOP/s (best of `repeats` size x size products)."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()

    def measure() -> float:
        best = min(timed(lambda: dot(a, b).block_until_ready()) for _ in range(repeats))
        return 2 * size**3 / best / 1e9

    return measure


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def train_flops(params, config: models.DecoderConfig, batch: int, seq: int) -> float:
    """6 * N_matmul * tokens + causal attention (QK^T and PV, forward + backward).

    N_matmul counts every weight used in a matmul: all kernels plus the (tied) LM head,
    not the embedding lookup.
    """
    n_matmul = sum(p.size for p in jax.tree.leaves(params) if p.ndim == 2)
    tokens = batch * seq
    heads_width = config.num_attention_heads * config.head_dim
    # Per layer and sequence: 2 matmuls x 2 flops x S^2 x H*Dh forward, x3 with backward;
    # causal, so half of the S^2 entries are used.
    attention = 3 * 2 * 2 * seq * seq * heads_width * config.num_hidden_layers * batch / 2
    return 6 * n_matmul * tokens + attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    import torch
    import transformers

    torch.manual_seed(0)
    torch.set_num_threads(args.torch_threads)
    hf_model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**SHAPE))
    with tempfile.TemporaryDirectory() as tmp:
        hf_model.save_pretrained(tmp)
        model, params = models.load_pretrained(tmp)
    print(f"model: {sum(p.size for p in jax.tree.leaves(params)) / 1e6:.2f}M params, {SHAPE}")
    print(f"batch {args.batch} x seq {args.seq}; torch threads {torch.get_num_threads()}")

    ids = np.random.RandomState(0).randint(0, SHAPE["vocab_size"], (args.batch, args.seq))
    ids = ids.astype(np.int32)
    optimizer = optax.adamw(1e-4, weight_decay=0.01)

    def loss_fn(params, ids):
        logits = model.apply({"params": params}, ids)
        logp = rlr.token_logprobs(logits[:, :-1], ids[:, 1:])
        return -jnp.mean(logp)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, ids):
        loss, grads = jax.value_and_grad(loss_fn)(params, ids)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    state = [params, opt_state]

    def run_rlr():
        state[0], state[1], loss = train_step(state[0], state[1], ids)
        return float(loss)

    compile_s = timed(run_rlr)

    hf_model.train()
    torch_opt = torch.optim.AdamW(hf_model.parameters(), lr=1e-4, weight_decay=0.01)
    torch_ids = torch.tensor(ids, dtype=torch.long)

    def run_hf():
        torch_opt.zero_grad(set_to_none=True)
        loss = hf_model(input_ids=torch_ids, labels=torch_ids).loss
        loss.backward()
        torch_opt.step()
        return float(loss.detach())

    run_hf()  # warm-up
    peak_fn = matmul_peak()
    # Interleaved, best of each: on a shared machine the load drifts, and measuring the three
    # back to back keeps the ratio and the fraction of peak honest.
    rlr_s, hf_s, peak = float("inf"), float("inf"), 0.0
    for _ in range(args.steps):
        rlr_s = min(rlr_s, timed(run_rlr))
        hf_s = min(hf_s, timed(run_hf))
        peak = max(peak, peak_fn())

    flops = train_flops(params, model.config, args.batch, args.seq)
    rlr_gflops, hf_gflops = flops / rlr_s / 1e9, flops / hf_s / 1e9
    tokens = args.batch * args.seq
    print(f"jnp.dot peak: {peak:.1f} GFLOP/s; step work {flops / 1e9:.2f} GFLOP")
    print(
        f"rlr: {rlr_s * 1e3:8.1f} ms/step ({tokens / rlr_s:8.0f} tok/s, {rlr_gflops:6.1f} "
        f"GFLOP/s = {rlr_gflops / peak:5.1%} of peak; compile {compile_s:.1f} s)"
    )
    print(
        f"HF : {hf_s * 1e3:8.1f} ms/step ({tokens / hf_s:8.0f} tok/s, {hf_gflops:6.1f} "
        f"GFLOP/s = {hf_gflops / peak:5.1%} of peak)"
    )
    print(f"ratio rlr/HF: {hf_s / rlr_s:.2f}x")


if __name__ == "__main__":
    main()
