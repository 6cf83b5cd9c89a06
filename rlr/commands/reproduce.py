"""`rlr reproduce`: the paper's ablation end to end (rlr.reproduce)."""

from __future__ import annotations

import argparse

from rlr.reproduce.report import plot_name, results_markdown, results_name
from rlr.reproduce.stages import Reproduction, StagePreempted


def run(args: argparse.Namespace) -> int:
    """`rlr reproduce`: every stage (cached), then print the table and where results are.
    A stage stopped by SIGTERM has saved its state: exit 0, and the same command continues."""
    reproduction = Reproduction(args.run_config)
    try:
        results = reproduction.run()
    except StagePreempted as stop:
        print(f"[rlr reproduce] {stop}; run the same command again to continue", flush=True)
        return 0
    print(results_markdown(results))
    out = reproduction.out
    for algorithm in reproduction.config.algorithms:
        name = results_name(algorithm, reproduction.filler_aware, reproduction.sweep_name)
        files = [f"{name}.json", f"{name}.md", f"{plot_name(name)}.png"]
        print(f"{algorithm} results: " + ", ".join(str(out / file) for file in files))
    return 0
