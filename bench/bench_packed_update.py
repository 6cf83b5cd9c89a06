"""Update throughput on real length mixes: rlr's PPO / GRPO update on padded rows against the
same update on packed rows (`ppo.pack`; rlr.packing).

A minibatch of B rows holds GSM8K questions (prompts, left-padded to P) and GSM8K model
solutions (responses, right-padded to T), their token counts drawn at random from the real
ones (bench_decode_waste.gsm8k_token_counts: rlr's BPE tokenizer trained on the GSM8K test
split; solutions + 1 for the EOS, capped at T). Both sides run `ppo_core.ppo_update` (jitted,
state donated) on the same Experience: the padded side on [B, P + T] rows, the packed side with
`Experience.packing` from `rlr.packing.pack_minibatch`, the host-side packing included in its
time. Tokens/s counts the real tokens (prompt + response) of the minibatch.

Model: the ~4.5M-parameter Qwen2 shape of bench_train_step.py (d=256, 4 layers, vocab 8192),
random weights; GRPO: the policy alone (sequence-mean loss); PPO: policy and a critic of the
same shape (token-mean loss, clipped value loss).

Protocol (bench/protocol.py): load average before and after, one warm-up of each side (compile
printed), then `--repeats` (5) interleaved rounds; medians, spreads and ratios printed.

    JAX_PLATFORMS=cpu python bench/bench_packed_update.py [--batch 32] [--prompt 128]
        [--max-new-tokens 512] [--algorithms grpo ppo]
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
from bench_decode_waste import SHAPE, gsm8k_token_counts
from protocol import interleaved, load_line, median, runs_line, summary, timed

from rlr import models
from rlr.packing import pack_minibatch
from rlr.training import ppo_core
from rlr.training.train_state import init_train_state


def experience(args, questions, solutions) -> ppo_core.Experience:
    """A minibatch of B rows with real prompt and response lengths and random tokens."""
    rng = np.random.RandomState(0)
    B, P, T = args.batch, args.prompt, args.max_new_tokens
    asked = np.minimum(rng.choice(questions, size=B), P)
    answered = np.minimum(rng.choice(solutions, size=B), T)
    attention = np.zeros((B, P + T), np.int32)
    for b in range(B):
        attention[b, P - asked[b] : P + answered[b]] = 1
    ids = np.where(attention > 0, rng.randint(1, SHAPE["vocab_size"], size=(B, P + T)), 0)
    response = attention[:, P:].astype(np.float32)
    noise = lambda: (0.1 * rng.standard_normal((B, T)) * response).astype(np.float32)  # noqa: E731
    return ppo_core.Experience(
        input_ids=jnp.asarray(ids, jnp.int32),
        attention_mask=jnp.asarray(attention),
        response_mask=jnp.asarray(response),
        old_logp=jnp.asarray(noise() - 9.0 * response),
        ref_logp=jnp.asarray(noise() - 9.0 * response),
        old_values=jnp.asarray(noise()),
        advantages=jnp.asarray(noise() * 10),
        returns=jnp.asarray(noise()),
    )


def update_runners(algorithm: str, batch: ppo_core.Experience):
    """(padded run, packed run) of one update step each, on fresh copies of one state."""
    config = models.DecoderConfig(**SHAPE)
    policy = models.DecoderForCausalLM(config)
    critic = (
        models.DecoderForTokenClassification(config, num_labels=1) if algorithm == "ppo" else None
    )
    params = {"policy": models.init_params(policy, jax.random.key(0))}
    if critic is not None:
        params["critic"] = models.init_params(critic, jax.random.key(1))
    tx = ppo_core.make_ppo_optimizer(
        policy_lr=1e-6, critic_lr=1e-6 if critic else None, weight_decay=0.0, max_grad_norm=1.0
    )
    update = jax.jit(
        functools.partial(
            ppo_core.ppo_update,
            ppo_core.PPOModels(policy=policy, critic=critic),
            tx,
            clip_eps=0.2,
            value_clip_eps=0.2,
            aggregation="token_mean" if critic else "sequence_mean",
        ),
        donate_argnums=0,
    )
    fresh = lambda: init_train_state(jax.tree.map(jnp.copy, params), tx)  # noqa: E731 (donated)
    states = {"padded": fresh(), "packed": fresh()}
    ids, mask = np.asarray(batch.input_ids), np.asarray(batch.attention_mask)

    def run(kind):
        def step():
            packing = None
            if kind == "packed":
                packing = jax.tree.map(jnp.asarray, pack_minibatch(ids, mask))
            states[kind], metrics = update(states[kind], batch._replace(packing=packing))
            jax.block_until_ready(metrics)

        return step

    return {"padded": run("padded"), "packed": run("packed")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="B, rows of the minibatch")
    parser.add_argument("--prompt", type=int, default=128, help="P")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="T")
    parser.add_argument("--algorithms", nargs="+", default=["grpo", "ppo"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    questions, solutions, how = gsm8k_token_counts(SHAPE["vocab_size"])
    batch = experience(args, questions, solutions)
    real = int(np.asarray(batch.attention_mask).sum())
    packing = pack_minibatch(np.asarray(batch.input_ids), np.asarray(batch.attention_mask))
    B, S = batch.input_ids.shape
    print(f"model: {SHAPE}")
    print(f"lengths: {how}")
    print(
        f"minibatch: B={B} rows of P+T={S} ({B * S} row-positions, {real} real tokens, "
        f"{real / (B * S):.0%}); packed: {packing.input_ids.shape[0]} rows of {S} "
        f"({real / packing.input_ids.size:.0%} full)"
    )
    print(f"{runs_line(args.repeats)}; real tokens/s of the median step; step: median (min-max)")
    print(load_line("before"), flush=True)
    for algorithm in args.algorithms:
        fns = update_runners(algorithm, batch)
        for name, fn in fns.items():
            print(
                f"  {algorithm} {name}: first step incl. compile {timed(fn)[0]:.1f} s", flush=True
            )
        times = interleaved(fns, repeats=args.repeats, warmup=0)
        base = median(times["padded"])
        for name, seconds in times.items():
            print(
                f"  {algorithm} {name:6s} {real / median(seconds):7.0f} tok/s, step "
                f"{summary(seconds, unit='s', digits=2)}, {base / median(seconds):.2f}x padded",
                flush=True,
            )
    print(load_line("after"))


if __name__ == "__main__":
    main()
