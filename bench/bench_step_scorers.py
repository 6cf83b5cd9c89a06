"""PRM step scoring: rlr's StepScorer against transformers (torch CPU), per step format.

For each step format (rlr, qwen_math_prm, math_shepherd, skywork, rlhflow, pure) a random torch
checkpoint is written the way the released PRM is laid out (a Qwen2 token classifier for rlr,
Qwen2ForProcessRewardModel, a Mistral causal LM, a Qwen2 trunk with Skywork's `v_head`, a Llama
3.1-style causal LM, a two-label Qwen2 token classifier for pure; tests/released_prms.py writes
them, as for the step scorer tests), at the width and depth of the CPU preset's PRM (the SFT
policy's architecture in rlr/configs/sft_cpu.yaml), with a tokenizer trained as `rlr
train-tokenizer` trains it plus the format's special tokens and chat template. rlr loads it with
`rlr.models.load_step_scorer`; transformers runs the torch model that was saved. That tokenizer
knows the synthetic task's words only, so a GSM8K row is a few hundred to ~1000 tokens: every
PRM's max_position_embeddings is `--max-positions` (4096), not the preset's 256.

Workload: real GSM8K model solutions (tests/data/gsm8k_model_solutions.jsonl), split into steps
on "\\n" with empty steps dropped. Both sides score the same tokens: each solution is rendered
once by `scorer.render` (the format's ids and the column that scores each step). rlr scores
the rendered rows with `scorer.score_rendered` (rows sorted by length, batches right-padded to
a power-of-two length bucket, one jitted program per bucket). The peer takes the same batches
(same batch size, same length order), right-pads each to its own longest row, runs the torch
model under `torch.inference_mode()` and reads the same columns with the format's rule
(sigmoid, softmax label 1, or the "+" share of the softmax over the two candidate logits);
a causal-LM format applies the LM head to the read columns only, as rlr does. Rendering is
shared by both sides and not timed (its cost is printed on its own). Scores must agree to
1e-4.

Protocol (bench/protocol.py): load average printed before and after (a warning above 1.0);
one warm-up run of each side (rlr compiles per length bucket), then `--repeats` (5) rounds of
one rlr and one torch run; the table gives the median of each in steps scored per second and
the ratio rlr / torch.
torch uses as many threads as CPUs available; XLA's CPU client uses all of them too. Run:

    JAX_PLATFORMS=cpu python bench/bench_step_scorers.py [--solutions 64] [--batch-size 8] \\
        [--repeats 5] [--formats rlr qwen_math_prm math_shepherd skywork rlhflow pure]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

import jax
import numpy as np
import yaml
from protocol import interleaved, load_line, median, timed

from rlr.configs import resolve
from rlr.models import STEP_FORMATS, load_step_scorer

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from released_prms import FAMILY, NAMED_FORMATS, SIZES, make_released_prm  # noqa: E402

DATA = REPO / "tests" / "data"
SOLUTIONS_FILE = DATA / "gsm8k_model_solutions.jsonl"
SOLVERS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
TOLERANCE = 1e-4


def preset_architecture() -> dict:
    """Width and depth of the CPU preset's policy (and so of its PRM), and its rope theta."""
    arch = yaml.safe_load(resolve("sft_cpu").read_text())["model"]["architecture"]
    return {**{k: int(arch[k]) for k in SIZES}, "rope_theta": float(arch["rope_theta"])}


def load_workload(count: int) -> tuple[list[str], list[list[str]]]:
    """`count` (question, steps) pairs: line i's solution by solver i mod 4 first, then the
    other solvers; steps are the solution's lines with empty ones dropped."""
    lines = [json.loads(line) for line in SOLUTIONS_FILE.read_text().splitlines() if line]
    n = len(SOLVERS)
    pairs = [(i, SOLVERS[(i + j) % n]) for j in range(n) for i in range(len(lines))]
    if count > len(pairs):
        raise SystemExit(f"--solutions {count}: {SOLUTIONS_FILE.name} holds {len(pairs)}")
    questions, solutions = [], []
    for i, solver in pairs[:count]:
        steps = [s for s in lines[i][solver]["solution"].split("\n") if s.strip()]
        questions.append(lines[i]["question"])
        solutions.append(steps)
    return questions, solutions


# ------------------------------------------------------------------ tokenizer


def base_tokenizer(directory: pathlib.Path):
    """rlr's byte-level BPE trained as `rlr train-tokenizer` trains it (its default corpus and
    vocabulary size, the ones the CPU preset's tokenizer uses)."""
    from rlr.data.synthetic import training_corpus
    from rlr.reproduce.schemas import SyntheticTaskSpec
    from rlr.tokenizer import train_tokenizer

    task = SyntheticTaskSpec()
    texts = training_corpus(num_problems=task.tokenizer_corpus_problems, seed=task.seed)
    train_tokenizer(texts, vocab_size=task.vocab_size, out_dir=directory)
    return directory


# ------------------------------------------------------------------ the torch peer


def gather(x, read):  # [B, S, ...] at [B, K] -> [B, K, ...]
    import torch

    index = read.view(*read.shape, *([1] * (x.ndim - 2))).expand(*read.shape, *x.shape[2:])
    return torch.gather(x, 1, index)


def torch_probabilities(fmt, model, candidates, ids, mask, read):
    """[B, K] step probabilities of one right-padded batch, read at the columns `read`."""
    import torch

    if fmt == "rlr":  # the token classifier's own forward; sigmoid of its one label
        logits = model(input_ids=ids, attention_mask=mask).logits
        return torch.sigmoid(gather(logits, read)[..., 0])
    if fmt == "pure":  # the two-label token classifier's own forward; softmax, label 1
        logits = model(input_ids=ids, attention_mask=mask).logits
        return torch.softmax(gather(logits, read), dim=-1)[..., 1]
    if fmt == "qwen_math_prm":  # Linear-ReLU-Linear on every token; softmax, label 1
        scores = model.score(model.model(input_ids=ids, attention_mask=mask).last_hidden_state)
        return torch.softmax(gather(scores, read), dim=-1)[..., 1]
    if fmt == "skywork":  # the value head on the trunk's last hidden state; sigmoid
        hidden = model.lm.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return torch.sigmoid(model.v_head.summary(hidden)[..., 0].gather(1, read))
    # a causal LM: the LM head at the read columns only, then the two candidates' softmax
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    logits = model.lm_head(gather(hidden, read))[..., list(candidates)]
    return torch.softmax(logits, dim=-1)[..., 0]


def torch_score(fmt, model, candidates, rendered, order, batch_size, pad_id):
    """The peer: rlr's batches (same rows, same length order), each right-padded to its own
    longest row."""
    import torch

    out: list[list[float]] = [[] for _ in rendered]
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            rows = [rendered[i] for i in chunk]
            width = max(len(r.ids) for r in rows)
            steps = max(len(r.read_at) for r in rows)
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            read = torch.zeros((len(rows), steps), dtype=torch.long)
            for b, r in enumerate(rows):
                ids[b, : len(r.ids)] = torch.tensor(r.ids)
                mask[b, : len(r.ids)] = 1
                read[b, : len(r.read_at)] = torch.tensor(r.read_at)
            probs = torch_probabilities(fmt, model, candidates, ids, mask, read).numpy()
            for b, i in enumerate(chunk):
                out[i] = probs[b, : len(rendered[i].read_at)].tolist()
    return out


def bench_format(fmt, args, arch, base, root, questions, solutions, seed) -> dict:
    directory = root / fmt
    model, tok = make_released_prm(
        fmt,
        directory,
        tokenizer=base,
        vocab_size=None,  # the format's tokenizer's length
        seed=seed,
        max_position_embeddings=args.max_positions,
        llama3_context=256,  # rlhflow: Llama 3.1's rope scaling over the preset's context
        **arch,
    )
    named = fmt if fmt in NAMED_FORMATS else None  # a causal-LM PRM's format is named
    scorer = load_step_scorer(directory, named, tokenizer=tok, batch_size=args.batch_size)
    assert scorer.format.name == fmt, (scorer.format.name, fmt)

    render_s, rendered = timed(lambda: [scorer.render(q, s) for q, s in zip(questions, solutions)])
    lengths = [len(r.ids) for r in rendered]
    longest = max(lengths)
    if longest > args.max_positions:
        raise SystemExit(f"{fmt}: a rendered row has {longest} tokens > --max-positions")
    steps = sum(len(r.read_at) for r in rendered)
    # rlr's batches: rows with steps, shortest first
    order = sorted((i for i, r in enumerate(rendered) if r.read_at), key=lengths.__getitem__)
    candidates = scorer.candidates

    def run_rlr():
        return scorer.score_rendered(rendered)

    def run_torch():
        return torch_score(fmt, model, candidates, rendered, order, args.batch_size, scorer.pad_id)

    # The warm-up runs, timed here (rlr compiles every length bucket) and compared.
    compile_s, got = timed(run_rlr)
    torch_warm_s, want = timed(run_torch)
    diff = max(abs(g - w) for gs, ws in zip(got, want) for g, w in zip(gs, ws))
    times = interleaved({"rlr": run_rlr, "torch": run_torch}, repeats=args.repeats, warmup=0)
    rlr_s, torch_s = median(times["rlr"]), median(times["torch"])
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{fmt}: {FAMILY[fmt]} {n_params / 1e6:.2f}M params, vocab {len(tok)}; "
        f"{len(rendered)} solutions, {steps} steps, rows of {min(lengths)}-{longest} tokens "
        f"(mean {np.mean(lengths):.0f}); render {render_s * 1e3:.0f} ms (shared, untimed); "
        f"warm-up rlr {compile_s:.1f} s (compile), torch {torch_warm_s:.2f} s; "
        f"median rlr {rlr_s * 1e3:.0f} ms, torch {torch_s * 1e3:.0f} ms",
        flush=True,
    )
    return dict(format=fmt, steps=steps, rlr=steps / rlr_s, torch=steps / torch_s, diff=diff)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solutions", type=int, default=64, help="GSM8K solutions per format")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--formats", nargs="+", choices=STEP_FORMATS, default=list(STEP_FORMATS))
    parser.add_argument(
        "--max-positions", type=int, default=4096, help="max_position_embeddings of every PRM"
    )
    args = parser.parse_args()

    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    cpus = len(os.sched_getaffinity(0))
    torch.set_num_threads(cpus)
    arch = preset_architecture()
    questions, solutions = load_workload(args.solutions)
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform} (XLA uses every CPU), "
        f"torch {torch.__version__} with torch.set_num_threads({cpus}) = the {cpus} CPUs "
        f"available, transformers {transformers.__version__}"
    )
    print(f"PRM width and depth from sft_cpu.yaml: {arch}")
    print(
        f"workload: {len(solutions)} GSM8K model solutions per format, "
        f"{sum(map(len, solutions))} steps; batch size {args.batch_size}; "
        f"median of {args.repeats} interleaved runs after one warm-up each"
    )
    print(load_line("before"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="rlr_bench_prm_") as tmp:
        root = pathlib.Path(tmp)
        base = base_tokenizer(root / "tokenizer")
        for seed, fmt in enumerate(args.formats):
            rows.append(bench_format(fmt, args, arch, base, root, questions, solutions, seed))
    print(load_line("after"), flush=True)

    print("\n| format | steps | rlr steps/s | transformers steps/s | ratio | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['format']} | {r['steps']} | {r['rlr']:.0f} | {r['torch']:.0f} | "
            f"{r['rlr'] / r['torch']:.2f}x | {r['diff']:.1e} |"
        )
    bad = [r["format"] for r in rows if not r["diff"] <= TOLERANCE]
    if bad:
        raise SystemExit(f"scores of rlr and torch differ by more than {TOLERANCE}: {bad}")


if __name__ == "__main__":
    main()
