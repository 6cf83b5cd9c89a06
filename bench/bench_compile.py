"""Compile time of a training step against depth: decoder layers scanned vs unrolled in a loop.

The step is forward + backward (`jax.value_and_grad` of a mean next-token cross-entropy) of a
DecoderForCausalLM with Qwen2-1.5B's widths (hidden 1536, intermediate 8960, 12 heads, 2 KV
heads, vocabulary 151936) and remat on, at 2, 8 and 28 layers (`--layers`), B=1, S=128. It is
compiled with `jax.jit(f).lower(*abstract).compile()` on `jax.ShapeDtypeStruct` params from
`jax.eval_shape`, so nothing is allocated. Each timing traces a fresh function (no trace or
compile cache hit); printed are trace + lowering and XLA compilation apart, and their sum.

Protocol (bench/protocol.py): load average printed before and after (a warning above 1.0);
one untimed 1-layer compile starts the backend, then `--repeats` (5) rounds in which every
(mode, depth) compiles once in turn; medians with the spread (min-max), and the ratio of the
deepest to the shallowest median per mode. The goal: scanned, compile at 28 layers <= 1.5x
compile at 2 layers (the unrolled loop grows about linearly).

    JAX_PLATFORMS=cpu python bench/bench_compile.py [--layers 2,8,28] [--repeats 5]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from protocol import interleaved, load_line, median, runs_line, spread, timed

from rlr import models

QWEN2_1P5B = dict(
    vocab_size=151936,
    hidden_size=1536,
    intermediate_size=8960,
    num_attention_heads=12,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    tie_word_embeddings=True,
)
GOAL = 1.5  # scanned: compile at the deepest <= GOAL x compile at the shallowest


def compile_step(layers: int, scan_layers: bool, batch: int, seq: int) -> tuple[float, float]:
    """(seconds to trace and lower, seconds to compile) the forward + backward of a `layers`
    -deep model on abstract params [..] and ids [B, S]; nothing is allocated."""
    config = models.DecoderConfig(num_hidden_layers=layers, **QWEN2_1P5B)
    model = models.DecoderForCausalLM(config, remat=True, scan_layers=scan_layers)
    params = jax.eval_shape(lambda: models.init_params(model, jax.random.key(0)))
    ids = jax.ShapeDtypeStruct((batch, seq), jnp.int32)

    def loss(params, ids):  # [B, S] -> [] mean next-token cross-entropy
        logits = model.apply({"params": params}, ids)[:, :-1]
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1))

    lower_s, lowered = timed(lambda: jax.jit(jax.value_and_grad(loss)).lower(params, ids))
    compile_s, _ = timed(lowered.compile)
    return lower_s, compile_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="2,8,28", help="comma-separated depths")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds")
    args = parser.parse_args()
    depths = sorted(int(d) for d in args.layers.split(","))

    print(f"widths: {QWEN2_1P5B}; remat on; batch {args.batch} x seq {args.seq}")
    print(runs_line(args.repeats, warmup=0) + " (plus one untimed 1-layer compile)")
    print(load_line("before"), flush=True)
    compile_step(1, True, args.batch, args.seq)  # starts the backend, off the clock

    results: dict[str, list[tuple[float, float]]] = {}

    def run(mode: str, depth: int):
        def fn():
            stages = compile_step(depth, mode == "scan", args.batch, args.seq)
            results.setdefault(f"{mode} {depth}", []).append(stages)

        return fn

    fns = {f"{mode} {d}": run(mode, d) for d in depths for mode in ("loop", "scan")}
    totals = interleaved(fns, repeats=args.repeats, warmup=0)
    print(load_line("after"))

    print(
        f"{'layers':>6} {'mode':>5} {'trace+lower s':>14} {'compile s':>10} {'total s':>8}  spread"
    )
    for d in depths:
        for mode in ("loop", "scan"):
            name = f"{mode} {d}"
            lower = median([r[0] for r in results[name]])
            comp = median([r[1] for r in results[name]])
            total = median(totals[name])
            print(
                f"{d:>6} {mode:>5} {lower:>14.2f} {comp:>10.2f} {total:>8.2f}  "
                f"{spread(totals[name])} s"
            )
    low, high = depths[0], depths[-1]
    for mode in ("loop", "scan"):
        ratio = median(totals[f"{mode} {high}"]) / median(totals[f"{mode} {low}"])
        comp = median([r[1] for r in results[f"{mode} {high}"]]) / median(
            [r[1] for r in results[f"{mode} {low}"]]
        )
        verdict = ""
        if mode == "scan":
            verdict = f" (goal <= {GOAL}x: {'met' if ratio <= GOAL else 'NOT met'})"
        print(
            f"{mode}: {high}-layer / {low}-layer = {ratio:.2f}x total, {comp:.2f}x compile"
            + verdict
        )


if __name__ == "__main__":
    main()
