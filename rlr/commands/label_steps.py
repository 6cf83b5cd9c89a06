"""`rlr label-steps`: Math-Shepherd step labels by completion, or by a PRM's scores
(rlr.training.labelling)."""

from __future__ import annotations

import argparse
import time

import jax

from rlr.training.labelling import (
    PolicyCompleter,
    label_solutions,
    label_with_prm,
    labelling_summary,
    sample_solutions,
)


def run(args: argparse.Namespace) -> int:
    """`rlr label-steps`: sample, complete, grade, write JSONL and print a summary."""
    import json

    from rlr.data.readers import write_jsonl
    from rlr.grading import Grader
    from rlr.training import loading
    from rlr.training.pipeline import command_inputs
    from rlr.training.schemas import ModelSpec

    problems, prompts, sampler, params, tokenizer = command_inputs(args, "label-steps")
    complete = PolicyCompleter(
        sampler,
        params,
        tokenizer,
        batch_size=args.batch_size,
        key=jax.random.key(args.seed),
        show_progress=True,
    )
    t0 = time.perf_counter()
    if args.given_solutions:
        if any(p.solution is None for p in problems):
            raise ValueError(
                f"--given-solutions: some problems in {args.problems} have no solution"
            )
        solutions = [[p.solution] for p in problems]
    else:
        solutions = sample_solutions(complete, prompts, num_samples=args.solutions_per_problem)
    t1 = time.perf_counter()
    with Grader(num_workers=args.grader_workers) as grader:
        if args.prm:
            scorer = loading.load_text_scorer(
                ModelSpec(path=args.prm, format=args.prm_format),
                what="--prm",
                prompt_style=args.prompt_style,
                batch_size=args.batch_size,
            )
            result = label_with_prm(
                problems,
                solutions,
                scorer=scorer,
                grader=grader,
                threshold=args.prm_threshold,
                max_steps=args.max_steps,
            )
        else:
            result = label_solutions(
                problems,
                prompts,
                solutions,
                complete=complete,
                grader=grader,
                num_completions=args.completions,
                max_steps=args.max_steps,
            )
    write_jsonl(args.out, result.records)
    print(json.dumps(labelling_summary(problems, result, solutions_seconds=t1 - t0), indent=2))
    print(f"wrote {len(result.records)} labelled solutions to {args.out}")
    return 0
