"""`rlr eval-bon`: best-of-N accuracy by PRM, ORM and majority vote (rlr.training.bon)."""

from __future__ import annotations

import argparse
import json
import pathlib

import jax

from rlr.models.step_scorers import StepScorer
from rlr.training.bon import best_of_n_figure, format_table, sample_and_score, summarize


def run(args: argparse.Namespace) -> int:
    """`rlr eval-bon`: sample, grade, score, print the table, write JSON and PNG."""
    from rlr.grading import Grader
    from rlr.training import loading
    from rlr.training.pipeline import command_inputs
    from rlr.training.schemas import ModelSpec

    problems, prompts, sampler, params, tokenizer = command_inputs(args, "eval-bon")
    prm = None
    if args.prm:
        spec = ModelSpec(path=args.prm, format=args.prm_format)
        if loading.text_prm_format(spec, args.tokenizer or args.policy, what="--prm") is None:
            prm = loading.load_scorer(spec, what="--prm")
        else:
            prm = loading.load_text_scorer(
                spec, what="--prm", prompt_style=args.prompt_style, batch_size=args.batch_size
            )
    orm = None
    if args.orm:
        loading.check_orm_format(ModelSpec(path=args.orm), what="--orm")
        orm = loading.load_scorer(ModelSpec(path=args.orm), what="--orm")
    with Grader(num_workers=args.grader_workers) as grader:
        samples = sample_and_score(
            sampler,
            params,
            tokenizer,
            prompts,
            [p.answer for p in problems],
            grader=grader,
            key=jax.random.key(args.seed),
            samples_per_problem=args.n,
            batch_size=args.batch_size,
            prm=prm,
            questions=[p.question for p in problems],
            orm=orm,
            max_steps=args.max_steps,
            show_progress=True,
        )
    result = summarize(samples)
    result["config"] = {
        "policy": args.policy,
        "prm": args.prm,
        "prm_format": prm.format.name if isinstance(prm, StepScorer) else "rlr" if prm else None,
        "orm": args.orm,
        "problems": args.problems,
        "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    best_of_n_figure(result).savefig(out.with_suffix(".png"))
    print(format_table(result))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0
