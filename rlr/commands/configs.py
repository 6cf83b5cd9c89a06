"""`rlr configs`: list the shipped YAML configs, or print one (rlr.configs)."""

from __future__ import annotations

import argparse

from rlr.configs import DIRECTORY, available, resolve


def run(args: argparse.Namespace) -> int:
    """`rlr configs [NAME]`: list the shipped configs, or print one."""
    if args.name:
        print(resolve(args.name).read_text(), end="")
        return 0
    for name in available():
        first = (DIRECTORY / f"{name}.yaml").read_text().splitlines()[0]
        print(f"{name:<20} {first.lstrip('# ')}")
    return 0
