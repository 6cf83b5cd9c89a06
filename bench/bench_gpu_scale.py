"""Decode tokens/s and update MFU at Qwen2-0.5B / 1.5B shapes, against the HBM roofline and
(`--hf`) transformers `generate`: the accelerator figures of a rollout and an update.

Random weights of the released architectures (vocabulary 151,936, tied embeddings, q/k/v
biases), bf16:
- decode: `rlr.sampling.Sampler` (compacting, layers unrolled for decoding), B random prompts
  of P tokens, T new tokens at temperature 1 with EOS disabled, so every row runs T steps.
  Roofline: a decode step must read every weight once and each row's KV cache up to its
  position, so at HBM bandwidth W it takes at least (2 N + 2 B L 2 Hkv Dh (P + T/2)) / W
  seconds (bf16, N parameters, L layers, Hkv key/value heads of width Dh, the cache's mean
  length); printed is the fraction of that bound reached.
- update: one AdamW step of the SFT loss (bf16 compute, f32 master weights, remat "minimal") on
  B x S tokens; MFU = (6 N_matmul + attention) flops per token (bench_train_step.train_flops)
  / time / the device's dense bf16 peak.
- `--hf`: transformers `generate` on the same shape (torch, bf16, sampling, `min_new_tokens`
  = T), when torch sees a CUDA device.

Peaks are looked up by device name (H100 and H200: 989 dense bf16 TFLOP/s; HBM 3.35 / 4.8
TB/s) or given with `--peak-tflops` / `--hbm-tbps`. `--shape tiny` runs the script on CPU in
seconds (a check that it runs; its figures mean nothing). Protocol as bench/protocol.py:
load printed, one warm-up call of each, medians of `--repeats` (5) calls (rlr's, then
HF's: on an accelerator of its own, nothing else shares the device).

    python bench/bench_gpu_scale.py --shape 0.5b [--batch 64 256] [--prompt 256] [--new-tokens 512]
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from bench_train_step import train_flops
from protocol import load_line, median, summary, timed

from rlr import models
from rlr.sampling import Sampler
from rlr.training.sft import make_sft_loss_fn

QWEN2 = dict(vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6, attention_bias=True)
SHAPES = {
    "0.5b": dict(
        QWEN2,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
    ),
    "1.5b": dict(
        QWEN2,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
    ),
    "tiny": dict(
        QWEN2,
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
}
# device-name fragment -> (dense bf16 FLOP/s, HBM bytes/s)
PEAKS = {"H200": (989e12, 4.8e12), "H100": (989e12, 3.35e12)}


def device_peaks(args) -> tuple[float | None, float | None]:
    """(peak FLOP/s, HBM bytes/s) of device 0: the flags, else the table, else None."""
    kind = jax.devices()[0].device_kind
    flops, hbm = next((v for k, v in PEAKS.items() if k in kind), (None, None))
    if args.peak_tflops:
        flops = args.peak_tflops * 1e12
    if args.hbm_tbps:
        hbm = args.hbm_tbps * 1e12
    return flops, hbm


def decode_roofline(config: models.DecoderConfig, n_params: int, batch: int, args) -> float:
    """Bytes one decode step must read at least: bf16 weights once, and every row's KV cache
    up to its mean position P + T/2."""
    kv = 2 * config.num_key_value_heads * config.head_dim * config.num_hidden_layers
    return 2 * n_params + 2 * batch * kv * (args.prompt + args.new_tokens / 2)


def bench_decode(config, params, n_params: int, args, hbm: float | None) -> None:
    """tokens/s of rlr's sampler (and HF generate) at each batch size."""
    model = models.DecoderForCausalLM(config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    sampler = Sampler(model, max_new_tokens=args.new_tokens, eos_id=-1, pad_id=0)
    hf = hf_model(args) if args.hf else None  # built once, for every batch size
    for batch in args.batch:
        ids = np.random.RandomState(batch).randint(1, config.vocab_size, (batch, args.prompt))
        ids = ids.astype(np.int32)
        call = functools.partial(sampler, params, ids, np.ones_like(ids))
        seconds = [timed(partial_call(call, seed))[0] for seed in range(args.repeats + 1)]
        first, times = seconds[0], seconds[1:]
        tokens = batch * args.new_tokens
        line = (
            f"decode B={batch}: rlr {tokens / median(times):9.0f} tok/s, call "
            f"{summary(times, unit='s')}, first {first:.1f} s"
        )
        if hbm:
            step_s = decode_roofline(config, n_params, batch, args) / hbm
            bound = tokens / (args.new_tokens * step_s)
            line += f" | HBM roofline {bound:9.0f} tok/s: {tokens / median(times) / bound:.1%}"
        if hf is not None:
            line += " | " + hf_generate(hf, ids, args)
        print(line, flush=True)


def partial_call(call, seed: int):
    """A no-argument function that samples with key `seed` and waits for the result."""
    return lambda: jax.block_until_ready(call(jax.random.key(seed)))


def hf_model(args):
    """transformers' Qwen2 of the bench shape on CUDA in bf16 (random weights), or a line
    saying why there is none."""
    try:
        import torch
        import transformers
    except ImportError as error:
        return f"HF skipped ({error})"
    if not torch.cuda.is_available():
        return "HF skipped (torch sees no CUDA device)"
    hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**SHAPES[args.shape]))
    return hf.to("cuda", torch.bfloat16)


def hf_generate(hf, ids: np.ndarray, args) -> str:
    """tokens/s of `hf.generate` (sampling, exactly T new tokens), or why it did not run."""
    if isinstance(hf, str):
        return hf
    import torch

    prompt = torch.tensor(ids, dtype=torch.long, device="cuda")
    settings = dict(do_sample=True, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)

    def run():
        with torch.no_grad():
            hf.generate(prompt, attention_mask=torch.ones_like(prompt), **settings)
        torch.cuda.synchronize()

    run()
    times = [timed(run)[0] for _ in range(args.repeats)]
    return f"HF generate {ids.shape[0] * args.new_tokens / median(times):9.0f} tok/s"


def bench_update(config, args, peak: float | None) -> None:
    """One AdamW step of the SFT loss on B x S tokens: time and MFU."""
    model = models.DecoderForCausalLM(config, dtype=jnp.bfloat16)  # f32 master weights
    params = models.init_params(model, jax.random.key(1))
    batch, seq = args.update_batch, args.update_seq
    loss_fn = make_sft_loss_fn(model, response_len=seq - 1)
    optimizer = optax.adamw(1e-5)
    ids = np.random.RandomState(0).randint(1, config.vocab_size, (batch, seq)).astype(np.int32)
    rows = dict(
        input_ids=ids,
        attention_mask=np.ones_like(ids),
        response_mask=np.ones((batch, seq - 1), np.int32),
    )

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, rows):
        loss, grads = jax.value_and_grad(lambda p: loss_fn(p, rows)[0])(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = [params, optimizer.init(params)]

    def run():
        state[0], state[1], loss = step(state[0], state[1], rows)
        return float(loss)

    first = timed(run)[0]
    times = [timed(run)[0] for _ in range(args.repeats)]
    flops = train_flops(state[0], config, batch, seq)
    rate = flops / median(times)
    line = (
        f"update B={batch} x S={seq}: {summary(times, unit='s')}, first {first:.1f} s, "
        f"{rate / 1e12:.1f} TFLOP/s"
    )
    if peak:
        line += f", MFU {rate / peak:.1%} of {peak / 1e12:g} TFLOP/s"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="0.5b")
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256], help="decode rows")
    parser.add_argument("--prompt", type=int, default=256, help="P, prompt tokens")
    parser.add_argument("--new-tokens", type=int, default=512, help="T, decoded tokens")
    parser.add_argument("--update-batch", type=int, default=8)
    parser.add_argument("--update-seq", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak")
    parser.add_argument("--hbm-tbps", type=float, default=None, help="HBM bandwidth, TB/s")
    parser.add_argument("--hf", action="store_true", help="also time transformers generate")
    parser.add_argument("--skip-update", action="store_true")
    args = parser.parse_args()
    config = models.DecoderConfig(**SHAPES[args.shape], pad_token_id=0)
    decode_model = models.DecoderForCausalLM(config, param_dtype=jnp.bfloat16)
    params = models.init_params(decode_model, jax.random.key(0))
    n_params = sum(leaf.size for leaf in jax.tree.leaves(params))
    peak, hbm = device_peaks(args)
    print(
        f"{args.shape}: {n_params / 1e6:.1f}M params; device {jax.devices()[0].device_kind}; "
        f"peaks {peak and peak / 1e12} TFLOP/s, {hbm and hbm / 1e12} TB/s; "
        f"P={args.prompt}, T={args.new_tokens}; medians of {args.repeats} calls after one "
        "warm-up (compiling) call of each"
    )
    print(load_line("before"), flush=True)
    bench_decode(config, params, n_params, args, hbm)
    if not args.skip_update:
        bench_update(config, args, peak)
    print(load_line("after"))


if __name__ == "__main__":
    main()
