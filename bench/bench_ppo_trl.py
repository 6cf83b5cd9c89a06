"""One PPO step of trl (torch, CPU) against one rlr PPO iteration, on the CPU preset's shapes.

    python bench/bench_ppo_trl.py [--repeats 5] [--iterations 1] [--rlr-python PYTHON]

Environment. trl needs its own virtualenv, kept apart from rlr's (installing trl into rlr's
environment may move the transformers / torch versions rlr's tests rely on). trl 1.13 removed
its PPO trainer; 1.12.0 is the last release with one (`trl.experimental.ppo`):

    python3 -m venv /tmp/trl-venv
    /tmp/trl-venv/bin/pip install torch==2.13.0 trl==1.12.0   # torch==2.13.0: the CPU build
    /tmp/trl-venv/bin/python bench/bench_ppo_trl.py

This script runs in the trl environment and never imports rlr (which needs jax). Everything rlr
does runs in subprocesses with `--rlr-python` (default: the repository's .venv/bin/python, or
$RLR_PYTHON): one writes the assets (tests/toy_assets.py) and the prompt texts
(rlr.data.prompts.build_prompt over rlr.data.synthetic problems, the same problems in the same
order PPOTrainer.prompts_for picks them), the other runs bench/bench_ppo.py --json FILE.

What is compared, on the same shapes (launch/configs/ppo_cpu.yaml on the random-weight assets
of bench/bench_ppo.py: Qwen2, d=128, 4 layers, 4 heads, 2 kv heads, ffn 384, tied embeddings,
the trained byte-level BPE vocabulary of the toy tokenizer):
  - rows: 16 prompts x 4 samples = 64, prompts left-padded to 64 tokens, up to 80 new tokens,
    temperature 1, stop at EOS; 1 PPO epoch of 4 minibatches of 16 rows, one optimizer step
    each;
  - networks: trl's policy and reference are transformers Qwen2ForCausalLM loaded from rlr's
    exported policy/ directory (the very weights rlr samples from); its value model is
    Qwen2ForTokenClassification over the policy trunk with a zeroed score head (rlr's
    critic_init=policy); its reward model is Qwen2ForTokenClassification loaded from rlr's prm/;
  - trl's PPOTrainer.train() itself runs, for warm-up + iterations steps (total_episodes), with
    float32 weights, no logging backends and no sample generations.

Phases. trl's train loop has no hooks inside a step, so the script wraps two module-level
functions its loop calls (same arguments, same results): `batch_generation` (generation) and
`forward` (its first call on the policy+value wrapper in a step starts the update); a
TrainerCallback's on_step_end ends the step. So per step:
  - generation: trl batch_generation (HF generate with a KV cache; the logits of every step are
    kept and give the old log-probabilities) vs rlr's rollout (the jitted KV-cache sampler);
  - grading: rlr only (math answers graded in a process pool); trl's reward is a network;
  - scoring: trl's reference, value and reward forward passes, KL penalty, GAE and whitening
    vs rlr's policy, reference, critic and PRM forward passes, Clip-Delta step rewards, KL,
    GAE and whitening. trl takes the old log-probabilities from its generation logits; rlr
    takes its sampler's the same way (`ppo.old_logprobs=rollout`, `--old-logprobs rollout`,
    the default here) or re-runs the policy for them (`--old-logprobs recompute`, rlr's own
    default: one more forward pass);
  - update: 4 minibatch steps (policy + value forward, backward, optimizer step) in both;
  - iteration: one whole step; trl's includes its data loading and gc (shown as "other").
Ratios are trl time / rlr time: above 1, rlr is faster. Differences that remain: trl steps one
optimizer with one learning rate over policy and value and does not clip gradients; rlr uses
per-network learning rates and clips the global norm at 1. The toy tokenizer's pad token is its
EOS token, as in rlr; trl then treats a sampled EOS as padding (shapes do not change).

Protocol (bench/protocol.py). Load average printed before and after the rounds (a warning
above 1.0). trl and rlr run in different interpreters, and trl's train() runs all its steps in
one call, so the two cannot alternate step by step: they alternate by round. A round is one rlr
run (a fresh bench/bench_ppo.py: setup, one warm-up iteration that compiles, `--iterations` timed
iterations) and then one trl run (a fresh PPOTrainer: `--warmup` untimed steps, `--iterations`
timed steps); `--repeats` (5; also spelled `--rounds`) rounds run in turn, rlr, trl, rlr, trl,
... The table gives, per phase, the median of every timed iteration of each side (by default
1 per round: the median of 5 interleaved iterations) with its spread (min-max), and the ratio
of the medians. Each round's wall time (setup and warm-up included) is printed too.

Exits 2 with a message when trl (with its PPO trainer) or the rlr interpreter is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from protocol import few_runs, interleaved, load_line, median, spread, summary

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_RLR_PYTHON = os.environ.get("RLR_PYTHON", str(REPO / ".venv" / "bin" / "python"))
PROMPTS_PER_ITERATION = 16
SAMPLES_PER_PROMPT = 4
MAX_PROMPT_TOKENS = 64
MAX_NEW_TOKENS = 80
MINIBATCHES = 4
PHASES = ("rollout", "grading", "scoring", "update", "iteration")

# Runs under rlr's interpreter: the assets of bench/bench_ppo.py and the prompts its PPOTrainer
# samples in iterations 0..n-1 (ppo_cpu.yaml: seed 0, plain prompts, 16 per iteration).
ASSETS_SCRIPT = """
import json, pathlib, sys
import numpy as np
from rlr.data.prompts import build_prompt
from rlr.data.readers import read_problems
from toy_assets import make_toy_assets  # tests/toy_assets.py

root, hidden, ffn, layers, iterations, per = sys.argv[1:7]
assets = make_toy_assets(root, hidden_size=int(hidden), intermediate_size=int(ffn),
                         num_hidden_layers=int(layers), vocab_size=512, num_train=512, num_test=16)
problems = [p for p in read_problems(assets / "data" / "problems_train.jsonl").records
            if p.answer is not None]
n, chosen = len(problems), []
for g in range(int(iterations) * int(per)):
    epoch, index = divmod(g, n)
    chosen.append(problems[np.random.default_rng([0, epoch]).permutation(n)[index]])
texts = [build_prompt(p.question, style="plain") for p in chosen]
(pathlib.Path(root) / "prompts.json").write_text(json.dumps(texts))
"""


def fail(message: str) -> None:
    """Prints `message` to stderr and exits 2 (the environment, not the benchmark, is wrong)."""
    print(f"bench_ppo_trl: {message}", file=sys.stderr)
    sys.exit(2)


def import_trl():
    """(trl module, trl.experimental.ppo.ppo_trainer module), or exit 2 saying how to install."""
    setup = (
        "set up its environment with:\n"
        "  python3 -m venv /tmp/trl-venv\n"
        "  /tmp/trl-venv/bin/pip install torch==2.13.0 trl==1.12.0\n"
        "and run this script with /tmp/trl-venv/bin/python"
    )
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        import trl
    except ImportError as exc:
        fail(f"trl is not installed in {sys.executable} ({exc}); {setup}")
    try:
        from trl.experimental.ppo import ppo_trainer
    except ImportError as exc:
        fail(
            f"trl {trl.__version__} has no PPO trainer (trl.experimental.ppo: {exc}); "
            f"trl 1.13 removed it, 1.12.0 is the last release with one; {setup}"
        )
    return trl, ppo_trainer


def run_rlr(python: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Runs `python argv` with rlr's checkout first on the path and jax on the CPU."""
    path = os.pathsep.join([str(REPO), str(REPO / "tests")])
    env = {**os.environ, "PYTHONPATH": path, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([python, *argv], env=env, cwd=REPO, text=True, **kwargs)


def make_assets(python: str, root: pathlib.Path, args: argparse.Namespace, steps: int) -> list:
    """Writes rlr's toy assets under root and returns the prompt texts of `steps` iterations."""
    out = run_rlr(
        python,
        ["-c", ASSETS_SCRIPT, str(root), str(args.hidden_size), str(args.intermediate_size)]
        + [str(args.layers), str(steps), str(PROMPTS_PER_ITERATION)],
        capture_output=True,
    )
    if out.returncode != 0:
        fail(f"writing rlr's assets with {python} failed:\n{out.stderr[-3000:]}")
    return json.loads((root / "prompts.json").read_text())


def bench_rlr(python: str, args: argparse.Namespace, json_path: pathlib.Path) -> dict:
    """One run of bench/bench_ppo.py: per timed iteration, its phase times (s) and response
    tokens ("steps"), and its setup and warm-up times (s)."""
    out = run_rlr(
        python,
        [str(REPO / "bench" / "bench_ppo.py"), "--iterations", str(args.iterations)]
        + ["--hidden-size", str(args.hidden_size), "--layers", str(args.layers)]
        + ["--intermediate-size", str(args.intermediate_size), "--json", str(json_path)]
        + [f"ppo.old_logprobs={args.old_logprobs}"],
        capture_output=True,
    )
    if out.returncode != 0:
        fail(f"bench/bench_ppo.py failed under {python}:\n{out.stderr[-3000:]}")
    timings = json.loads(json_path.read_text())
    rows = PROMPTS_PER_ITERATION * SAMPLES_PER_PROMPT
    steps = [
        {phase: run[f"time/{phase}"] for phase in PHASES}
        | {"tokens": run["response_length"] * rows}
        for run in timings["runs"]
    ]
    return {"steps": steps, "setup": timings["setup"], "warmup": timings["warmup"]}


class StepClock:
    """Per-step timestamps from trl's train loop: generation start/end, update start, step end.

    Installed by replacing the `batch_generation` and `forward` names in trl's ppo_trainer module
    with wrappers that record the time and call the originals unchanged.
    """

    def __init__(self, ppo_trainer, *, eos_id: int):
        self.module = ppo_trainer
        self.eos_id = eos_id
        self.steps: list[dict[str, float]] = []
        self.train_begin = 0.0
        self._originals = (ppo_trainer.batch_generation, ppo_trainer.forward)

    def install(self) -> None:
        generate, forward = self._originals
        wrapper_type = self.module.PolicyAndValueWrapper

        def timed_batch_generation(*a, **kw):
            start = time.perf_counter()
            out = generate(*a, **kw)
            self.steps.append({"generation_start": start, "generation_end": time.perf_counter()})
            queries = a[1] if len(a) > 1 else kw["queries"]
            self.steps[-1]["tokens"] = response_tokens(out[0], queries, eos_id=self.eos_id)
            return out

        def timed_forward(model, *a, **kw):
            step = self.steps[-1] if self.steps else {}
            is_update = isinstance(getattr(model, "module", model), wrapper_type)
            if is_update and "update_start" not in step:
                step["update_start"] = time.perf_counter()
            return forward(model, *a, **kw)

        self.module.batch_generation = timed_batch_generation
        self.module.forward = timed_forward

    def uninstall(self) -> None:
        self.module.batch_generation, self.module.forward = self._originals

    def phases(self, skip: int) -> list[dict[str, float]]:
        """Phase durations (s) of every step after the first `skip`."""
        rows, previous_end = [], self.train_begin
        for step in self.steps:
            gen = step["generation_end"] - step["generation_start"]
            scoring = step["update_start"] - step["generation_end"]
            update = step["step_end"] - step["update_start"]
            iteration = step["step_end"] - previous_end
            previous_end = step["step_end"]
            rows.append(
                {
                    "rollout": gen,
                    "scoring": scoring,
                    "update": update,
                    "iteration": iteration,
                    "other": iteration - gen - scoring - update,
                    "tokens": step["tokens"],
                }
            )
        return rows[skip:]


def response_tokens(query_responses, queries, *, eos_id: int) -> float:
    """Generated tokens up to and including each row's first EOS, summed over the batch.

    query_responses: [B, P + T] torch ids; queries: [B, P].
    """
    import torch

    responses = query_responses[:, queries.shape[1] :]
    is_eos = responses == eos_id
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, responses.shape[1])
    return float(first.sum())


def bench_trl(trl, ppo_trainer, assets: pathlib.Path, prompts: list[str], args, warmup: int):
    """Runs trl's PPOTrainer.train() for warmup + iterations steps; per-step phase times."""
    import datasets
    import torch
    import transformers
    from transformers import (
        AutoTokenizer,
        DataCollatorWithPadding,
        Qwen2ForCausalLM,
        Qwen2ForTokenClassification,
    )

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(assets / "tokenizer", padding_side="left")
    rows = [text for text in prompts for _ in range(SAMPLES_PER_PROMPT)]
    encoded = tokenizer(rows, add_special_tokens=False)["input_ids"]
    # Long prompts keep their last P tokens, as rlr's encode_prompts does.
    encoded = [ids[-MAX_PROMPT_TOKENS:] for ids in encoded]
    dataset = datasets.Dataset.from_dict({"input_ids": encoded})
    policy = Qwen2ForCausalLM.from_pretrained(assets / "policy", dtype=torch.float32)
    reference = Qwen2ForCausalLM.from_pretrained(assets / "policy", dtype=torch.float32)
    value = Qwen2ForTokenClassification.from_pretrained(
        assets / "policy", num_labels=1, dtype=torch.float32
    )
    torch.nn.init.zeros_(value.score.weight)
    reward = Qwen2ForTokenClassification.from_pretrained(assets / "prm", dtype=torch.float32)
    batch = PROMPTS_PER_ITERATION * SAMPLES_PER_PROMPT
    steps = warmup + args.iterations
    config = ppo_trainer.PPOConfig(
        output_dir=str(assets.parent / "trl_out"),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_mini_batches=MINIBATCHES,
        num_ppo_epochs=1,
        local_rollout_forward_batch_size=batch,
        total_episodes=steps * batch,
        response_length=MAX_NEW_TOKENS,
        temperature=1.0,
        stop_token="eos",
        kl_coef=0.02,
        kl_estimator="k1",
        cliprange=0.2,
        cliprange_value=0.2,
        gamma=1.0,
        lam=1.0,
        learning_rate=5e-5,
        lr_scheduler_type="constant",
        num_sample_generations=0,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        # trl's PPOConfig defaults to bf16 and gradient checkpointing; rlr runs float32, no remat.
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        seed=0,
    )
    clock = StepClock(ppo_trainer, eos_id=tokenizer.eos_token_id)

    class EndOfStep(transformers.TrainerCallback):
        def on_train_begin(self, *_, **__):
            clock.train_begin = time.perf_counter()

        def on_step_end(self, *_, **__):
            clock.steps[-1]["step_end"] = time.perf_counter()

    trainer = ppo_trainer.PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=reference,
        reward_model=reward,
        value_model=value,
        train_dataset=dataset,
        eval_dataset=dataset.select(range(batch)),
        # Pads every prompt to P = 64 as rlr does, so both run the same [64, 144] sequences.
        data_collator=DataCollatorWithPadding(
            tokenizer, padding="max_length", max_length=MAX_PROMPT_TOKENS
        ),
        callbacks=[EndOfStep()],
    )
    trainer.remove_callback(transformers.PrinterCallback)
    clock.install()
    try:
        trainer.train()
    finally:
        clock.uninstall()
    if len(clock.steps) != steps or any("update_start" not in s for s in clock.steps):
        raise RuntimeError(
            f"trl {trl.__version__}: expected {steps} timed steps, got {len(clock.steps)}; its "
            "PPO loop no longer calls batch_generation / forward as this script assumes"
        )
    return clock.phases(skip=warmup)


def fmt(seconds: float) -> str:
    """Seconds to 3 decimals; "-" for a phase the library does not have (NaN)."""
    return "-" if seconds != seconds else f"{seconds:.3f}"


def run_rounds(trl, ppo_trainer, root: pathlib.Path, args: argparse.Namespace):
    """(trl per-step phase times, rlr runs, wall seconds per round of each) of args.repeats
    rounds, rlr then trl in each."""
    steps = args.warmup + args.iterations
    prompts = make_assets(args.rlr_python, root / "assets", args, steps)
    trl_steps, rlr_runs = [], []

    def rlr_round():
        rlr_runs.append(bench_rlr(args.rlr_python, args, root / f"rlr_{len(rlr_runs)}.json"))

    def trl_round():
        trl_steps.extend(bench_trl(trl, ppo_trainer, root / "assets", prompts, args, args.warmup))
        print(f"round {len(rlr_runs)}/{args.repeats} done", file=sys.stderr, flush=True)

    print(load_line("before"), flush=True)
    wall = interleaved({"rlr": rlr_round, "trl": trl_round}, repeats=args.repeats, warmup=0)
    print(load_line("after"), flush=True)
    return trl_steps, rlr_runs, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--iterations", type=int, default=1, help="timed steps of each side per round"
    )
    parser.add_argument(
        "--repeats",
        "--rounds",
        dest="repeats",
        type=int,
        default=5,
        help="rounds of one rlr run then one trl run",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed trl steps per round")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--intermediate-size", type=int, default=384)
    parser.add_argument("--rlr-python", default=DEFAULT_RLR_PYTHON)
    parser.add_argument(
        "--old-logprobs",
        choices=["rollout", "recompute"],
        default="rollout",
        help="rlr's ppo.old_logprobs: the sampler's log-probs, as trl uses its generation "
        "logits (default), or one more policy pass",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--json", default=None, help="write all timings here too")
    args = parser.parse_args()
    if args.iterations < 1 or args.repeats < 1 or args.warmup < 0:
        fail("--iterations and --repeats must be >= 1 and --warmup >= 0")
    trl, ppo_trainer = import_trl()
    if not pathlib.Path(args.rlr_python).exists():
        fail(f"--rlr-python {args.rlr_python} does not exist; point it at rlr's virtualenv python")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="rlr_bench_trl_") as tmp:
        trl_steps, rlr_runs, wall = run_rounds(trl, ppo_trainer, pathlib.Path(tmp), args)
    rlr_steps = [step for run in rlr_runs for step in run["steps"]]
    trl_med = {k: median([s[k] for s in trl_steps]) for k in trl_steps[0]}
    rlr_med = {k: median([s[k] for s in rlr_steps]) for k in rlr_steps[0]}
    trl_spread = {k: spread([s[k] for s in trl_steps], digits=3) for k in trl_steps[0]}
    rlr_spread = {k: spread([s[k] for s in rlr_steps], digits=3) for k in rlr_steps[0]}
    trl_med["grading"] = float("nan")
    rlr_med["other"] = float("nan")
    trl_med["iteration w/o grading"] = trl_med["iteration"]
    trl_spread["iteration w/o grading"] = trl_spread["iteration"]
    rlr_med["iteration w/o grading"] = median([s["iteration"] - s["grading"] for s in rlr_steps])
    rlr_spread["iteration w/o grading"] = spread(
        [s["iteration"] - s["grading"] for s in rlr_steps], digits=3
    )

    print(
        f"trl {trl.__version__} (torch {torch.__version__}, {torch.get_num_threads()} threads) vs "
        f"rlr bench/bench_ppo.py ({args.rlr_python}, ppo.old_logprobs={args.old_logprobs}); "
        f"{args.repeats} rounds (rlr then trl) x "
        f"{args.iterations} timed iteration(s) of each: medians of {len(rlr_steps)} iterations"
        f"{few_runs(len(rlr_steps))}"
    )
    print(
        f"rows {PROMPTS_PER_ITERATION * SAMPLES_PER_PROMPT}, response tokens per iteration: "
        f"trl ~{trl_med['tokens']:.0f}, rlr ~{rlr_med['tokens']:.0f}; rlr setup "
        f"{median([r['setup'] for r in rlr_runs]):.2f} s, first iteration (compiles) "
        f"{median([r['warmup'] for r in rlr_runs]):.2f} s; wall per round (setup and warm-up "
        f"included) rlr {summary(wall['rlr'], unit='s', digits=1)}, "
        f"trl {summary(wall['trl'], unit='s', digits=1)}"
    )
    print("| phase | trl s | trl min-max | rlr s | rlr min-max | trl / rlr |")
    print("|---|---|---|---|---|---|")
    for name in ("rollout", "grading", "scoring", "update", "other", "iteration") + (
        "iteration w/o grading",
    ):
        a, b = trl_med[name], rlr_med[name]
        ratio = a / b if a == a and b == b and b > 0 else float("nan")
        ratio_text = "-" if ratio != ratio else f"{ratio:.2f}x"
        low_high = trl_spread.get(name, "-"), rlr_spread.get(name, "-")
        print(f"| {name} | {fmt(a)} | {low_high[0]} | {fmt(b)} | {low_high[1]} | {ratio_text} |")
    for label, med in (("trl", trl_med), ("rlr", rlr_med)):
        print(f"{label} generation tokens/s {med['tokens'] / med['rollout']:.0f}")
    if args.json:
        pathlib.Path(args.json).write_text(
            json.dumps(
                {
                    "trl_version": trl.__version__,
                    "torch_version": torch.__version__,
                    "trl_steps": trl_steps,
                    "rlr_runs": rlr_runs,
                    "round_wall_s": wall,
                    "trl_median": trl_med,
                    "rlr_median": rlr_med,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
