"""`rlr ppo`: an RL run, PPO or a critic-free algorithm (rlr.training.ppo)."""

from __future__ import annotations

import argparse
import json

from rlr.training.checkpoint import run_directory
from rlr.training.ppo import PPOTrainer


def run(args: argparse.Namespace) -> int:
    """`rlr ppo`: train (resuming from OUT_DIR/checkpoints), optionally export the policy."""
    export = run_directory(args.export, field="--export") if args.export else None
    trainer = PPOTrainer(args.run_config)
    summary = trainer.run()
    if export is not None and not summary["preempted"]:
        trainer.export_policy(export)
        summary["export"] = str(args.export)
    print(json.dumps(summary))
    return 0
