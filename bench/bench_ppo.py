"""One PPO iteration on the CPU preset's shapes, timed by phase.

    JAX_PLATFORMS=cpu python bench/bench_ppo.py [--repeats 5] [--hidden-size 128 ...]

Builds random-weight assets of the CPU preset's size (tests/toy_assets.py; the policy of
launch/configs/sft_cpu.yaml: d=128, 4 layers, ~1M parameters) and runs launch/configs/ppo_cpu.yaml
(16 prompts x 4 samples, up to 80 new tokens, 4 minibatches) on them. Prints the time of each
phase (rollout, grading, scoring, update) as PPOTrainer.iteration reports it.

Protocol (bench/protocol.py): load average printed before and after (a warning above 1.0);
one warm-up iteration that compiles everything (printed on its own), then `--repeats` (5;
also spelled `--iterations`) timed iterations; the table gives the median of each phase with
its spread (min-max). This script has no peer to interleave with: bench/bench_ppo_trl.py runs
it in rounds alternating with trl's PPO trainer.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import tempfile

from protocol import few_runs, load_line, median, spread, timed

REPO = pathlib.Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats",
        "--iterations",
        dest="iterations",
        type=int,
        default=5,
        help="timed iterations after the warm-up one (median of these)",
    )
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--intermediate-size", type=int, default=384)
    parser.add_argument(
        "--json", default=None, help="write the timings here too (medians and every iteration)"
    )
    parser.add_argument("overrides", nargs="*", help="PPO config key=value overrides")
    args = parser.parse_args()
    root = pathlib.Path(tempfile.mkdtemp(prefix="rlr_bench_ppo_"))
    try:
        run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(args: argparse.Namespace, root: pathlib.Path) -> None:
    """Builds the assets under `root`, runs the iterations and prints the table."""
    from rlr.config_loading import load_config
    from rlr.grading import Grader

    sys.path.insert(0, str(REPO / "tests"))
    from toy_assets import make_toy_assets

    from rlr.training.ppo import PPOTrainer
    from rlr.training.schemas import PPOConfig

    assets = make_toy_assets(
        root / "assets",
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_hidden_layers=args.layers,
        vocab_size=512,
        num_train=512,
        num_test=16,
    )
    config_path = REPO / "rlr" / "configs" / "ppo_cpu.yaml"
    config = load_config(
        PPOConfig,
        config_path,
        [
            f"out_dir={root / 'run'}",
            f"tokenizer={assets / 'tokenizer'}",
            f"policy.path={assets / 'policy'}",
            f"prm.path={assets / 'prm'}",
            f"orm.path={assets / 'orm'}",
            f"data.train={assets / 'data' / 'problems_train.jsonl'}",
            f"data.test={assets / 'data' / 'problems_test.jsonl'}",
            "rollout.max_new_tokens=80",  # the shapes bench_ppo_trl gives trl
            *args.overrides,
        ],
    )
    print(load_line("before"), flush=True)
    setup, trainer = timed(lambda: PPOTrainer(config))
    phases = ("time/rollout", "time/grading", "time/scoring", "time/update", "time/iteration")
    with Grader(num_workers=config.grading.num_workers, timeout_s=5.0) as grader:
        warmup = timed(lambda: trainer.iteration(0, grader))[0]
        runs = [trainer.iteration(i + 1, grader) for i in range(args.iterations)]
    print(load_line("after"))
    medians = {k: median([r[k] for r in runs]) for k in phases}
    tokens = median([r["response_length"] for r in runs]) * config.rollout.batch_size
    print(f"setup (load + shard) {setup:.2f} s; first iteration (compiles) {warmup:.2f} s")
    print(f"rows {config.rollout.batch_size}, ~{tokens:.0f} response tokens per iteration")
    n = args.iterations
    print(f"median of {n} iterations after the warm-up one{few_runs(n)}")
    print("| phase | median s | min-max s | share |")
    print("|---|---|---|---|")
    for k in phases:
        name = k[5:]
        low_high = spread([r[k] for r in runs], digits=3)
        share = medians[k] / medians["time/iteration"]
        print(f"| {name} | {medians[k]:.3f} | {low_high} | {share:.0%} |")
    rates = [r["tokens_per_second/rollout"] for r in runs]
    print(f"rollout tokens/s {median(rates):.0f} (min-max {spread(rates, digits=0)})")
    if args.json:
        keys = (*phases, "response_length", "tokens_per_second/rollout")
        per_iteration = [{k: float(r[k]) for k in keys} for r in runs]
        pathlib.Path(args.json).write_text(
            json.dumps({"setup": setup, "warmup": warmup, **medians, "runs": per_iteration})
        )


if __name__ == "__main__":
    main()
