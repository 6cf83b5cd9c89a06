"""The `rlr` command: one subcommand per job (`rlr --help` lists them).

Each subcommand lives in its own module, which exposes `add_parser(subparsers)`; that
function registers the subcommand's arguments and sets `func` to a callable taking the
parsed namespace and returning an exit code. Modules are imported lazily by name so that
`rlr --help` stays fast and a broken optional dependency only affects its own subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand name -> module that defines add_parser(subparsers)
SUBCOMMANDS: dict[str, str] = {
    "probe": "rlr.probe",
    "make-data": "rlr.data.synthetic",
    "train-tokenizer": "rlr.tokenizer",
    "sft": "rlr.training.sft",
    "train-prm": "rlr.training.reward_model",
    "train-orm": "rlr.training.reward_model",
    "label-steps": "rlr.training.labelling",
    "eval-bon": "rlr.training.bon",
    "ppo": "rlr.training.ppo",
    "plan": "rlr.plan",
    "reproduce": "rlr.reproduce",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="rlr",
        description="PPO for LLM math reasoning with PRM step rewards refined by Clip and Delta.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rlr` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
