"""Sampling throughput: rlr's jitted KV-cache sampler vs transformers `generate` (torch CPU).

Both run the same ~4.5M-parameter Qwen2 (d=256, 4 layers, vocab 8192, tied embeddings) with the
same weights, prompt length 32 and 128 new tokens at temperature 1; EOS is disabled in both so
every row produces all 128 tokens. Compilation is excluded (one warm-up call each).

    PYTHONPATH=. python bench/bench_sampling.py [--batch 16 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import numpy as np

from rlr import models, sampling

SHAPE = dict(
    vocab_size=8192,
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_batch(batch, args, sampler, params, hf_model) -> None:
    """Times both samplers at one batch size and prints tokens/s and the ratio."""
    import torch

    rng = np.random.RandomState(batch)
    ids = rng.randint(1, SHAPE["vocab_size"], size=(batch, args.prompt)).astype(np.int32)
    mask = np.ones_like(ids)
    tokens = batch * args.new_tokens
    key = jax.random.key(0)

    def run_rlr():
        jax.block_until_ready(sampler(params, ids, mask, key))

    start = time.perf_counter()
    run_rlr()
    compile_s = time.perf_counter() - start
    rlr_s = best_time(run_rlr, args.repeats)

    torch_ids = torch.tensor(ids, dtype=torch.long)
    torch_mask = torch.tensor(mask, dtype=torch.long)

    def run_hf(new_tokens=args.new_tokens):
        with torch.no_grad():
            out = hf_model.generate(
                input_ids=torch_ids,
                attention_mask=torch_mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                eos_token_id=None,
                pad_token_id=0,
            )
        assert out.shape == (batch, args.prompt + new_tokens), out.shape

    run_hf(8)  # warm-up
    hf_s = best_time(run_hf, args.repeats)
    print(
        f"B={batch:3d}: rlr {tokens / rlr_s:9.0f} tok/s ({rlr_s:.2f} s, first call incl. "
        f"compile {compile_s:.1f} s) | HF generate {tokens / hf_s:9.0f} tok/s ({hf_s:.2f} s)"
        f" | ratio rlr/HF {hf_s / rlr_s:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    import torch
    import transformers

    torch.manual_seed(0)
    torch.set_num_threads(args.torch_threads)
    hf_model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**SHAPE)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf_model.save_pretrained(tmp)
        model, params = models.load_pretrained(tmp)
    n_params = sum(p.size for p in jax.tree.leaves(params))
    print(f"model: {n_params / 1e6:.2f}M params, {SHAPE}")
    print(f"devices: jax {jax.devices()[0].platform}, torch threads {torch.get_num_threads()}")

    no_eos = -1  # never sampled, so every row runs to new_tokens
    sampler = sampling.Sampler(
        model, max_new_tokens=args.new_tokens, eos_id=no_eos, pad_id=0, temperature=1.0
    )
    for batch in args.batch:
        bench_batch(batch, args, sampler, params, hf_model)


if __name__ == "__main__":
    main()
