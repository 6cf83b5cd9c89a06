"""One PPO iteration on the CPU preset's shapes, timed by phase.

    JAX_PLATFORMS=cpu python bench/bench_ppo.py [--iterations 3] [--hidden-size 128 ...]

Builds random-weight assets of the CPU preset's size (tests/toy_assets.py; the policy of
launch/configs/sft_cpu.yaml: d=128, 4 layers, ~1M parameters) and runs launch/configs/ppo_cpu.yaml
(16 prompts x 4 samples, up to 80 new tokens, 4 minibatches) on them. Prints the time of each
phase (rollout, grading, scoring, update) after one warm-up iteration that compiles everything.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--intermediate-size", type=int, default=384)
    parser.add_argument("--json", default=None, help="write the timings here too")
    parser.add_argument("overrides", nargs="*", help="PPO config key=value overrides")
    args = parser.parse_args()
    root = pathlib.Path(tempfile.mkdtemp(prefix="rlr_bench_ppo_"))
    try:
        run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(args: argparse.Namespace, root: pathlib.Path) -> None:
    """Builds the assets under `root`, runs the iterations and prints the table."""
    from rlr.config import load_config
    from rlr.grading import Grader

    sys.path.insert(0, str(REPO / "tests"))
    from toy_assets import make_toy_assets

    from rlr.training.configs import PPOConfig
    from rlr.training.ppo import PPOTrainer

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
    t0 = time.perf_counter()
    trainer = PPOTrainer(config)
    setup = time.perf_counter() - t0
    phases = ("time/rollout", "time/grading", "time/scoring", "time/update", "time/iteration")
    with Grader(num_workers=config.grading.num_workers, timeout_s=5.0) as grader:
        t0 = time.perf_counter()
        trainer.iteration(0, grader)
        warmup = time.perf_counter() - t0
        runs = [trainer.iteration(i + 1, grader) for i in range(args.iterations)]
    medians = {k: statistics.median(r[k] for r in runs) for k in phases}
    tokens = statistics.median(r["response_length"] for r in runs) * config.rollout.batch_size
    print(f"setup (load + shard) {setup:.2f} s; first iteration (compiles) {warmup:.2f} s")
    print(f"rows {config.rollout.batch_size}, ~{tokens:.0f} response tokens per iteration")
    print("| phase | median s | share |")
    print("|---|---|---|")
    for k in phases[:-1]:
        print(f"| {k[5:]} | {medians[k]:.3f} | {medians[k] / medians['time/iteration']:.0%} |")
    print(f"| iteration | {medians['time/iteration']:.3f} | 100% |")
    print(f"rollout tokens/s {statistics.median(r['tokens_per_second/rollout'] for r in runs):.0f}")
    if args.json:
        pathlib.Path(args.json).write_text(
            json.dumps({"setup": setup, "warmup": warmup, **medians})
        )


if __name__ == "__main__":
    main()
