"""`rlr probe`: the reward-hacking probe (rlr.probe) as a command."""

from __future__ import annotations

import argparse
import json
import pathlib

from rlr.probe import format_group_table, format_table, group_probe, probe_figure, probe_returns


def run(args: argparse.Namespace) -> int:
    """Runs the probe, prints the table and writes probe.json and probe.png to args.out."""
    result = probe_returns(
        args.scores,
        correct=args.correct,
        filler_score=args.filler_score,
        max_filler=args.max_filler,
        alpha=args.alpha,
        eta=args.eta,
        tokens_per_step=args.tokens_per_step,
    )
    result["group"] = group_probe(
        args.scores,
        filler_score=args.filler_score,
        max_filler=args.max_filler,
        eta=args.eta,
        tokens_per_step=args.tokens_per_step,
    )
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(result, indent=2) + "\n")
    probe_figure(result).savefig(out / "probe.png")
    print("return with gamma = 1 (PPO's token rewards):")
    print(format_table(result))
    print(
        "\nfirst-token process advantage of the padded sample in a group of two (GRPO); "
        "/none is a critic-free run's default (reward.process_normalization), /group opt-in:"
    )
    print(format_group_table(result["group"]))
    print(f"wrote {out / 'probe.json'} and {out / 'probe.png'}")
    return 0
