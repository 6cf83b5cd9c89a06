"""`rlr sft`: supervised fine-tuning of the policy (rlr.training.sft)."""

from __future__ import annotations

import argparse
import json

from rlr.training.sft import run_sft


def run(args: argparse.Namespace) -> int:
    """`rlr sft`: train, evaluate, export; exit 0 also when stopped by SIGTERM (resumable)."""
    summary = run_sft(args.run_config)
    print(json.dumps(summary, indent=2))
    return 0
