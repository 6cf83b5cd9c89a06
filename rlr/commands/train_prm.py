"""`rlr train-prm`: train, evaluate and export a process reward model (rlr.training.reward_model;
the command's registry entry adds kind=prm to the config)."""

from __future__ import annotations

import argparse
import json

from rlr.training.reward_model import run_reward_model


def run(args: argparse.Namespace) -> int:
    """`rlr train-prm`: train, evaluate, export; exit 0 also on SIGTERM (resumable)."""
    summary = run_reward_model(args.run_config)
    print(json.dumps(summary, indent=2))
    return 0
