"""Sampling throughput: rlr's jitted KV-cache sampler vs transformers `generate` (torch CPU).

Both run the same ~4.5M-parameter Qwen2 (d=256, 4 layers, vocab 8192, tied embeddings) with the
same weights, prompt length 32 and 128 new tokens at temperature 1; EOS is disabled in both so
every row produces all 128 tokens. Measured: generated tokens per second at each batch size.

Protocol (bench/protocol.py): load average printed before and after (a warning above 1.0);
per batch size one warm-up call of each side (rlr's compiles, and is printed on its own; HF's
generates 8 tokens), then `--repeats` (5) rounds of one rlr and one HF call; printed are the
median tokens/s of each, the spread of the call times (min-max) and the ratio of the medians.

    JAX_PLATFORMS=cpu python bench/bench_sampling.py [--batch 16 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import jax
import numpy as np
from protocol import interleaved, load_line, median, runs_line, summary, timed

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

    compile_s = timed(run_rlr)[0]

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
    times = interleaved({"rlr": run_rlr, "hf": run_hf}, repeats=args.repeats, warmup=0)
    rlr_s, hf_s = median(times["rlr"]), median(times["hf"])
    rlr_call, hf_call = (summary(times[k], unit="s", digits=3) for k in ("rlr", "hf"))
    print(
        f"B={batch:3d}: rlr {tokens / rlr_s:9.0f} tok/s, call {rlr_call}, first call incl. "
        f"compile {compile_s:.1f} s | HF generate {tokens / hf_s:9.0f} tok/s, call {hf_call} "
        f"| ratio rlr/HF {hf_s / rlr_s:.2f}x",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median of these)")
    parser.add_argument("--loop", choices=["while", "scan"], default="while")
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
    print(f"decode loop: {args.loop}")
    print(f"devices: jax {jax.devices()[0].platform}, torch threads {torch.get_num_threads()}")
    print(f"{runs_line(args.repeats)}; tok/s of the median call; call: median (min-max)")
    print(load_line("before"), flush=True)

    no_eos = -1  # never sampled, so every row runs to new_tokens
    sampler = sampling.Sampler(
        model,
        max_new_tokens=args.new_tokens,
        eos_id=no_eos,
        pad_id=0,
        temperature=1.0,
        loop=args.loop,
        compact=args.loop == "while",  # a scan runs all T steps for every row
    )
    for batch in args.batch:
        bench_batch(batch, args, sampler, params, hf_model)
    print(load_line("after"))


if __name__ == "__main__":
    main()
