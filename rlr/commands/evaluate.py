"""`rlr evaluate`: greedy and sampled accuracy of a policy on held-out problems, as an RL run
evaluates it (rlr.training.evaluation.evaluate_policy_dir)."""

from __future__ import annotations

import argparse
import json
import pathlib

from rlr.training.evaluation import evaluate_policy_dir


def run(args: argparse.Namespace) -> int:
    """`rlr evaluate`: evaluate --policy (default: the config's policy.path) with the RL
    config's held-out problems and settings; print the accuracies, write the JSON to --out."""
    config = args.run_config
    policy = args.policy or config.policy.path
    if not policy:
        raise ValueError("--policy: name the policy directory (the config's policy.path is empty)")
    result = evaluate_policy_dir(policy, config)
    if args.out:
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    shown = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps({"policy": str(policy), **shown}))
    if args.out:
        print(f"wrote {args.out}")
    return 0
