"""Decoding at real response lengths: useful tokens/s of rlr's continuous-batching sampler, of
its compacting sampler, of its sampler with compaction off, and (`--hf`) of transformers
`generate` (torch CPU).

Useful tokens are the tokens of each response up to and including its EOS; a batch that
decodes every row until the longest one ends spends most of its row-steps on padding. The
lengths are real: the token counts (+1 for the EOS) of the 4 x 1319 GSM8K model solutions in
tests/data/gsm8k_model_solutions.jsonl, tokenized with rlr.tokenizer.train_tokenizer (rlr's
Qwen2-style byte-level BPE) trained on the GSM8K test questions and reference answers of
tests/data/gsm8k_test.jsonl. Each row gets one length drawn at random, and stops there: rlr
through the samplers' per-row `budget`, HF through a `StoppingCriteria` that returns a per-row
bool tensor (generate then marks those rows finished as it does at EOS). EOS itself is
disabled, so a random-weight model stops at realistic lengths. T (max_new_tokens,
`--max-new-tokens`, 512) caps the lengths as a rollout config would (the few longer solutions
are cut at T; their T tokens count as useful).

Per batch size B there are `--queue` x B prompts (4 x by default, a rollout's chunk of prompts
larger than its decode batch): the batch samplers take them B at a time, one call per B rows;
the continuous sampler (`rlr.continuous_sampling.ContinuousSampler`) decodes them all through
B slots, refilling `--refill-rows` slots at a time (default B / 8).

All run the same ~4.5M-parameter Qwen2 as bench_sampling.py (d=256, 4 layers, vocab 8192,
tied embeddings) with the same weights, prompts of 64 random tokens, temperature 1.

Protocol (bench/protocol.py): load average before and after; per batch size one warm-up call
of each (rlr's compile; printed), then `--repeats` (5) interleaved rounds; printed are the
median useful tokens/s, the spread of call times and the ratios of medians.

    JAX_PLATFORMS=cpu python bench/bench_decode_waste.py [--batch 64 256] [--queue 4] [--hf]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile

import jax
import numpy as np
from protocol import interleaved, load_line, median, runs_line, summary, timed

from rlr import models, sampling
from rlr.continuous_sampling import ContinuousSampler
from rlr.tokenizer import train_tokenizer

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
SOLVERS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
SHAPE = dict(
    vocab_size=8192,
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
)


def read_jsonl(path: pathlib.Path) -> list[dict]:
    """The JSON objects of a .jsonl file, one per line."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def gsm8k_token_counts(vocab_size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """[Q] token counts of the GSM8K test questions, [N] token counts + 1 (the EOS) of the
    GSM8K model solutions, and how they were counted."""
    questions = [r["question"] for r in read_jsonl(DATA / "gsm8k_test.jsonl")]
    corpus = [r["question"] + "\n" + r["answer"] for r in read_jsonl(DATA / "gsm8k_test.jsonl")]
    solutions = [
        row[name]["solution"]
        for row in read_jsonl(DATA / "gsm8k_model_solutions.jsonl")
        for name in SOLVERS
    ]
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_tokenizer(corpus, vocab_size=vocab_size, out_dir=tmp)
    encode = lambda texts: np.array(  # noqa: E731
        [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    )
    counts, asked = encode(solutions), encode(questions)
    chars = np.array([len(s) for s in solutions])
    how = (
        f"{len(solutions)} solutions, rlr BPE tokenizer (vocab {len(tokenizer)}) trained on "
        f"gsm8k_test: {chars.sum() / counts.sum():.2f} chars/token; tokens+EOS median "
        f"{np.median(counts) + 1:.0f}, p99 {np.percentile(counts, 99) + 1:.0f}, "
        f"max {counts.max() + 1}; {len(questions)} questions: median {np.median(asked):.0f} "
        f"tokens, p99 {np.percentile(asked, 99):.0f}"
    )
    return asked, counts + 1, how


def response_lengths(vocab_size: int) -> tuple[np.ndarray, str]:
    """[N] token counts + 1 (the EOS) of the GSM8K model solutions, and how they were counted."""
    _, lengths, how = gsm8k_token_counts(vocab_size)
    return lengths, how


def hf_runner(hf_model, ids, mask, target, steps):
    """A call of transformers `generate` whose row b stops after target[b] new tokens."""
    import torch
    import transformers

    prompt = ids.shape[1]
    torch_ids = torch.tensor(ids, dtype=torch.long)
    torch_mask = torch.tensor(mask, dtype=torch.long)
    torch_target = torch.tensor(target, dtype=torch.long)

    class RowBudget(transformers.StoppingCriteria):
        """[B] bool: row b is finished once it has target[b] new tokens."""

        def __call__(self, input_ids, scores, **kwargs):
            return (input_ids.shape[1] - prompt) >= torch_target

    def run():
        with torch.no_grad():
            out = hf_model.generate(
                input_ids=torch_ids,
                attention_mask=torch_mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=steps,
                eos_token_id=None,
                pad_token_id=0,
                stopping_criteria=transformers.StoppingCriteriaList([RowBudget()]),
            )
        assert out.shape == (len(ids), prompt + target.max()), out.shape

    return run


def compacting_row_steps(target: np.ndarray, batch: int, min_rows: int) -> tuple[int, int]:
    """(row-steps, steps) rlr.sampling.sample spends on one batch whose rows keep `target`
    tokens: at each size of compaction_sizes it steps while more rows live than the next
    size holds."""
    sizes = sampling.compaction_sizes(batch, min_rows=min_rows)
    row_steps = step = 0
    for i, size in enumerate(sizes):
        following = sizes[i + 1] if i + 1 < len(sizes) else 0
        while (target > step).sum() > following:
            row_steps, step = row_steps + size, step + 1
    return row_steps, step


def continuous_row_steps(
    target: np.ndarray, slots: int, refill_rows: int, min_rows: int
) -> tuple[int, int]:
    """(row-steps, steps) of ContinuousSampler's schedule on a queue whose rows keep `target`
    tokens: every slot steps until refill_rows are free, the next prompts take them, and the
    last rows drain through compaction."""
    left = np.zeros(slots, np.int64)  # tokens each slot's row still draws (0: free)
    waiting = row_steps = steps = 0
    while waiting < len(target):
        free = np.flatnonzero(left == 0)
        while free.size and waiting < len(target):
            take = min(refill_rows, free.size, len(target) - waiting)
            left[free[:take]] = target[waiting : waiting + take]
            waiting, free = waiting + take, free[take:]
        refill_at = min(refill_rows, len(target) - waiting)
        while waiting < len(target) and (left > 0).any() and (left == 0).sum() < refill_at:
            row_steps, steps, left = row_steps + slots, steps + 1, np.maximum(left - 1, 0)
    tail, tail_steps = compacting_row_steps(left[left > 0], slots, min_rows)
    return row_steps + tail, steps + tail_steps


def schedule_model(target: np.ndarray, batch: int, refill_rows: int, min_rows: int) -> str:
    """What the schedules alone predict for continuous batching over compaction: the ratio of
    row-steps (a decode step costing in proportion to its rows, as on this CPU) and of steps
    (a step costing the same at any row count: decoding bound by reading the weights)."""
    chunks = [target[a : a + batch] for a in range(0, len(target), batch)]
    compact = [compacting_row_steps(c, batch, min_rows) for c in chunks]
    cont_rows, cont_steps = continuous_row_steps(target, batch, refill_rows, min_rows)
    best_rows, best_steps = continuous_row_steps(target, batch, 1, min_rows)
    useful = int(target.sum())
    rows, steps = sum(r for r, _ in compact), sum(t for _, t in compact)
    return (
        f"  schedule model: useful / row-steps: compacting {useful / rows:.0%}, continuous "
        f"(R={refill_rows}) {useful / cont_rows:.0%} (R=1: {useful / best_rows:.0%}); continuous "
        f"over compacting, a step costing in proportion to its rows: {rows / cont_rows:.2f}x "
        f"(R=1: {rows / best_rows:.2f}x), a step costing the same at any row count: "
        f"{steps / cont_steps:.2f}x (R=1: {steps / best_steps:.2f}x)"
    )


def bench_batch(batch, args, lengths, samplers, params, hf_model, steps) -> None:
    """Times the samplers on one random queue of lengths and prints useful tok/s and ratios."""
    rng = np.random.RandomState(batch)
    rows = batch * args.queue
    target = rng.choice(lengths, size=rows).astype(np.int32)  # [N] tokens each row keeps
    useful = int(target.sum())
    ids = rng.randint(1, SHAPE["vocab_size"], size=(rows, args.prompt)).astype(np.int32)
    mask = np.ones_like(ids)
    key = jax.random.key(0)
    chunks = [slice(a, a + batch) for a in range(0, rows, batch)]
    longest = sum(int(target[c].max()) for c in chunks)
    print(
        f"B={batch}, {rows} prompts: useful tokens {useful}, "
        f"useful / (B x longest of each batch) {useful / (batch * longest):.0%}",
        flush=True,
    )
    refill_rows = args.refill_rows or max(1, batch // 8)
    print(schedule_model(target, batch, refill_rows, args.min_rows), flush=True)

    def batched(sampler):
        def run():
            kept = 0
            for c in chunks:
                out = jax.block_until_ready(sampler(params, ids[c], mask[c], key, target[c]))
                kept += int(np.asarray(out.mask).sum())
            assert kept == useful

        return run

    def whole(sampler):
        def run():
            out = jax.block_until_ready(sampler(params, ids, mask, key, target))
            assert int(np.asarray(out.mask).sum()) == useful

        return run

    fns = {name: batched(sampler) for name, sampler in samplers.items()}
    fns["rlr continuous"] = whole(
        ContinuousSampler(
            samplers["rlr compact"].model,
            slots=batch,
            refill_rows=args.refill_rows,
            max_new_tokens=steps,
            eos_id=-1,
            pad_id=0,
            temperature=1.0,
        )
    )
    for name, fn in fns.items():
        first = timed(fn)[0]
        rate = useful / first
        print(f"  {name}: first call incl. compile {first:.1f} s, {rate:.0f} useful tok/s")
    if hf_model is not None:
        calls = [hf_runner(hf_model, ids[c], mask[c], target[c], steps) for c in chunks]
        fns["HF generate"] = lambda: [call() for call in calls]
        fns["HF generate"]()  # warm-up
    if args.repeats == 0:  # B=256 takes minutes a call: the first calls above are the figures
        return
    times = interleaved(fns, repeats=args.repeats, warmup=0)
    base = median(times["rlr continuous"])
    for name, seconds in times.items():
        print(
            f"  B={batch:3d} {name:17s} {useful / median(seconds):7.0f} useful tok/s, call "
            f"{summary(seconds, unit='s', digits=2)}, continuous runs "
            f"{median(seconds) / base:.2f}x this speed",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed rounds (median of these; 0: first calls only)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=512, help="T")
    parser.add_argument("--min-rows", type=int, default=8, help="smallest compacted batch")
    parser.add_argument("--queue", type=int, default=4, help="prompts per decode slot")
    parser.add_argument("--refill-rows", type=int, default=None, help="default B / 8")
    parser.add_argument("--hf", action="store_true", help="also time transformers generate")
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    import torch
    import transformers

    lengths, how = response_lengths(SHAPE["vocab_size"])
    steps = args.max_new_tokens
    lengths = np.minimum(lengths, steps)
    torch.manual_seed(0)
    torch.set_num_threads(args.torch_threads)
    hf_model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**SHAPE)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf_model.save_pretrained(tmp)
        model, params = models.load_pretrained(tmp)
    n_params = sum(p.size for p in jax.tree.leaves(params))
    print(f"model: {n_params / 1e6:.2f}M params, {SHAPE}")
    print(f"lengths: {how}")
    print(f"prompt {args.prompt} tokens, T = max_new_tokens {steps}, temperature 1")
    print(f"devices: jax {jax.devices()[0].platform}, torch threads {torch.get_num_threads()}")
    print(f"{runs_line(args.repeats)}; useful tok/s of the median call; call: median (min-max)")
    print(load_line("before"), flush=True)

    no_eos = -1  # never sampled: rows stop at their budgets only
    settings = dict(max_new_tokens=steps, eos_id=no_eos, pad_id=0, temperature=1.0)
    samplers = {
        "rlr compact": sampling.Sampler(model, min_rows=args.min_rows, **settings),
        "rlr no compaction": sampling.Sampler(model, compact=False, **settings),
    }
    for batch in args.batch:
        bench_batch(batch, args, lengths, samplers, params, hf_model if args.hf else None, steps)
    print(load_line("after"))


if __name__ == "__main__":
    main()
