"""Training-step throughput: rlr (jitted, donated forward + backward + AdamW) vs HF torch.

Same ~4.5M-parameter Qwen2 as bench_sampling.py, same weights, next-token cross-entropy on
random tokens, AdamW in both (optax / torch.optim). rlr's loss is the one `rlr train-sft` uses
(`make_sft_loss_fn`: the trunk, then `lm_head_readout` over every position but the first); HF's
is `Qwen2ForCausalLM(labels=...)`. Prints the time per step, tokens/s, the
ratio, achieved GFLOP/s (6 * N_matmul * tokens + causal attention) and that as a fraction of
the f32 jnp.dot rate measured in the same rounds (`PEAK_DOTS` 1024 x 1024 products per run).

Protocol (bench/protocol.py): load average printed before and after (a warning above 1.0);
one warm-up step of each side (rlr's compiles and is printed on its own) and of the jnp.dot
probe, then `--repeats` (5) rounds of one rlr step, one HF step and one probe run; printed are
medians with the spread (min-max) and the ratio of the medians. Every step of either side
updates its weights; neither is reset between steps.

    JAX_PLATFORMS=cpu python bench/bench_train_step.py [--batch 8] [--seq 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
from protocol import interleaved, load_line, median, runs_line, spread, timed

from rlr import models
from rlr.training.sft import make_sft_loss_fn

SHAPE = dict(
    vocab_size=8192,
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
)


PEAK_SIZE, PEAK_DOTS = 1024, 3


def matmul_probe():
    """A function running `PEAK_DOTS` f32 jnp.dot products of PEAK_SIZE x PEAK_SIZE matrices,
    and the GFLOP it does."""
    a = jax.random.normal(jax.random.key(0), (PEAK_SIZE, PEAK_SIZE), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (PEAK_SIZE, PEAK_SIZE), jnp.float32)
    dot = jax.jit(jnp.dot)

    def probe():
        for _ in range(PEAK_DOTS):
            dot(a, b).block_until_ready()

    return probe, PEAK_DOTS * 2 * PEAK_SIZE**3 / 1e9


def train_flops(params, config: models.DecoderConfig, batch: int, seq: int) -> float:
    """6 * N_matmul * tokens + causal attention (QK^T and PV, forward + backward).

    N_matmul counts every weight used in a matmul: all kernels (stacked [L, In, Out] when the
    layers are scanned) plus the tied LM head, counted once as the embedding.
    """
    leaves = jax.tree_util.tree_leaves_with_path(params)
    n_matmul = sum(leaf.size for path, leaf in leaves if path[-1].key in ("kernel", "embedding"))
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
    parser.add_argument(
        "--repeats", "--steps", dest="repeats", type=int, default=5, help="timed rounds"
    )
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
    print(runs_line(args.repeats))
    print(load_line("before"), flush=True)

    ids = np.random.RandomState(0).randint(0, SHAPE["vocab_size"], (args.batch, args.seq))
    ids = ids.astype(np.int32)
    optimizer = optax.adamw(1e-4, weight_decay=0.01)

    # Every column but the first is a "response" token: the same next-token loss HF computes.
    sft_loss_fn = make_sft_loss_fn(model, response_len=args.seq - 1)
    rows = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "response_mask": np.ones((args.batch, args.seq - 1), np.int32),
    }

    def loss_fn(params, rows):
        return sft_loss_fn(params, rows)[0]

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, rows):
        loss, grads = jax.value_and_grad(loss_fn)(params, rows)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    state = [params, opt_state]

    def run_rlr():
        state[0], state[1], loss = train_step(state[0], state[1], rows)
        return float(loss)

    compile_s = timed(run_rlr)[0]

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
    probe, probe_gflop = matmul_probe()
    probe()  # warm-up (compiles)
    # The three in turn, so that a drift of load on a shared machine falls on all of them.
    times = interleaved(
        {"rlr": run_rlr, "hf": run_hf, "peak": probe}, repeats=args.repeats, warmup=0
    )
    rlr_s, hf_s = median(times["rlr"]), median(times["hf"])
    peak = probe_gflop / median(times["peak"])
    print(load_line("after"))

    flops = train_flops(params, model.config, args.batch, args.seq)
    rlr_gflops, hf_gflops = flops / rlr_s / 1e9, flops / hf_s / 1e9
    tokens = args.batch * args.seq
    peak_spread = spread([probe_gflop / t for t in times["peak"]], digits=1)
    print(
        f"jnp.dot: {peak:.1f} GFLOP/s (median; min-max {peak_spread}); "
        f"step work {flops / 1e9:.2f} GFLOP"
    )
    print(
        f"rlr: {rlr_s * 1e3:8.1f} ms/step ({tokens / rlr_s:8.0f} tok/s, {rlr_gflops:6.1f} "
        f"GFLOP/s = {rlr_gflops / peak:5.1%} of jnp.dot; compile {compile_s:.1f} s); "
        f"min-max {spread(times['rlr'], scale=1e3, digits=1)} ms"
    )
    print(
        f"HF : {hf_s * 1e3:8.1f} ms/step ({tokens / hf_s:8.0f} tok/s, {hf_gflops:6.1f} "
        f"GFLOP/s = {hf_gflops / peak:5.1%} of jnp.dot); "
        f"min-max {spread(times['hf'], scale=1e3, digits=1)} ms"
    )
    print(f"ratio rlr/HF (medians): {hf_s / rlr_s:.2f}x")


if __name__ == "__main__":
    main()
