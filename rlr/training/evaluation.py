"""Policy evaluation on held-out problems, and the reward-hacking diagnostics.

Hacking shows up in the shape of solutions before it shows in accuracy, so the same
statistics are computed for every rollout batch and every evaluation: steps per solution,
response length, the fraction of filler steps (well-formed but useless, e.g. "Step ready.")
and of repeated steps. What counts as a filler step is a `StepClassifier` the caller may
replace; the default knows no dataset.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from rlr.data.prompts import build_prompt
from rlr.data.records import Problem
from rlr.data.segmentation import DEFAULT_SEPARATORS, step_texts
from rlr.training.batching import prompt_width
from rlr.training.pipeline import sample_and_judge

StepClassifier = Callable[[str], bool]  # step text -> True when the step is a filler

_CONTENT = re.compile(r"[0-9=+\-*/^\\]")


def is_filler_step(step: str) -> bool:
    """A step that says nothing: a short line (at most four words) with no digit, operator or
    LaTeX, such as "Step ready.", "Let me think." or an emoji."""
    step = step.strip()
    return not _CONTENT.search(step) and len(step.split()) <= 4


def solution_step_counts(
    texts: Sequence[str],
    *,
    separators: Sequence[str] = DEFAULT_SEPARATORS,
    is_filler: StepClassifier = is_filler_step,
) -> np.ndarray:  # [R, 3] int: steps, filler steps, repeated steps of each solution
    """Per solution: its number of steps, of filler steps and of repeated steps."""
    counts = np.zeros((len(texts), 3), np.int64)
    for row, text in enumerate(texts):
        steps = step_texts(text, separators=separators)
        seen: set[str] = set()
        repeated = 0
        for s in steps:
            repeated += s in seen
            seen.add(s)
        counts[row] = (len(steps), sum(is_filler(s) for s in steps), repeated)
    return counts


def stats_from_counts(counts: np.ndarray) -> dict[str, float]:  # counts [R, 3]
    """Mean steps per solution and the filler / repeated fractions over all steps."""
    counts = np.asarray(counts).reshape(-1, 3)
    steps_total, filler, repeated = (int(x) for x in counts.sum(axis=0))
    return {
        "steps_per_solution": steps_total / max(len(counts), 1),
        "filler_step_fraction": filler / max(steps_total, 1),
        "repeated_step_fraction": repeated / max(steps_total, 1),
    }


def solution_stats(
    texts: Sequence[str],
    *,
    separators: Sequence[str] = DEFAULT_SEPARATORS,
    is_filler: StepClassifier = is_filler_step,
) -> dict[str, float]:
    """Mean steps per solution and the fractions of filler and repeated steps over all steps."""
    return stats_from_counts(
        solution_step_counts(texts, separators=separators, is_filler=is_filler)
    )


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Accuracy and solution-shape statistics of one evaluation pass."""

    accuracy: float
    response_length: float
    steps_per_solution: float
    filler_step_fraction: float
    repeated_step_fraction: float
    truncated_fraction: float
    num_problems: int
    samples: tuple[dict[str, Any], ...] = ()

    def metrics(self, prefix: str) -> dict[str, float]:
        """Scalar fields as `{prefix}/{name}` for a MetricsWriter."""
        return {
            f"{prefix}/{f.name}": getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "samples"
        }


def evaluate_policy(
    sampler: Any,
    params: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    golds: Sequence[str],
    *,
    grader: Any,
    key: jax.Array,
    max_prompt_tokens: int,
    batch_size: int,
    trim_prompts: bool = True,
    separators: Sequence[str] = DEFAULT_SEPARATORS,
    is_filler: StepClassifier = is_filler_step,
    keep_samples: int = 8,
) -> EvalResult:
    """Samples one response per prompt with `sampler` (an rlr.sampling.Sampler from
    rlr.training.generation.sampler_for; greedy when its temperature is 0) and grades it
    against the gold answers with `grader` (an rlr.grading.Grader), through
    rlr.training.pipeline.sample_and_judge; the solution statistics are evaluation's own.
    Prompts are left-padded to `max_prompt_tokens` (a longer one keeps its last tokens), or
    with `trim_prompts` to the power-of-two width of the longest, at most that
    (rlr.training.batching.prompt_width)."""
    if len(prompts) != len(golds):
        raise ValueError(f"{len(prompts)} prompts but {len(golds)} gold answers")
    if not prompts:
        raise ValueError("evaluate_policy needs at least one prompt")
    judged = sample_and_judge(
        sampler,
        params,
        tokenizer,
        prompts,
        golds,
        grader=grader,
        key=key,
        batch_size=batch_size,
        prompt_tokens=(
            prompt_width(tokenizer, prompts, limit=max_prompt_tokens)
            if trim_prompts
            else max_prompt_tokens
        ),
    )
    texts, correct = judged.texts, judged.correct
    samples = tuple(
        {"prompt": p, "response": t, "gold": g, "correct": bool(c)}
        for p, t, g, c in list(zip(prompts, texts, golds, correct))[:keep_samples]
    )
    return EvalResult(
        accuracy=float(np.mean(correct)),
        response_length=float(judged.batch.mask.sum(axis=1).mean()),
        truncated_fraction=float(judged.truncated.mean()),
        num_problems=len(prompts),
        samples=samples,
        **solution_stats(texts, separators=separators, is_filler=is_filler),
    )


def evaluate_problems(
    sampler: Any,
    params: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    *,
    prompt_style: str = "plain",
    **kwargs: Any,
) -> EvalResult:
    """`evaluate_policy` on problems: each question rendered by rlr.data.prompts.build_prompt
    in `prompt_style`, graded against the problem's gold answer. `kwargs` go to
    evaluate_policy (grader, key, max_prompt_tokens, batch_size, ...)."""
    prompts = [build_prompt(p.question, style=prompt_style, tokenizer=tokenizer) for p in problems]
    return evaluate_policy(
        sampler, params, tokenizer, prompts, [p.answer for p in problems], **kwargs
    )


def evaluate_ppo_policy(
    sampler: Any,
    params: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    config: Any,
    *,
    grader: Any,
    key_offset: int = 0,
) -> EvalResult:
    """How a PPO run evaluates a policy on its held-out problems, wherever it is done
    (PPOTrainer.evaluate during training, rlr reproduce on an exported policy).

    `config` is the run's PPOConfig: its prompt style, prompt width, separators and seed, and
    batches of eval.batch_size rows (null: rollout.chunk_rows, or the whole rollout batch, so
    that evaluation never asks for more rows at once than a rollout does). The key is
    fold_in(key(seed + 2), key_offset).
    """
    roll = config.rollout
    return evaluate_problems(
        sampler,
        params,
        tokenizer,
        problems,
        prompt_style=config.data.prompt_style,
        grader=grader,
        key=jax.random.fold_in(jax.random.key(config.seed + 2), key_offset),
        max_prompt_tokens=roll.max_prompt_tokens,
        trim_prompts=roll.trim_prompts,
        batch_size=config.eval.batch_size or roll.chunk_rows or roll.batch_size,
        separators=config.reward.separators,
    )


def evaluate_policy_dir(policy_dir: str, config: Any) -> dict[str, Any]:
    """Greedy and temperature-1 evaluation of an exported policy (an HF directory) on the
    held-out problems of a PPO config, as that run evaluates (evaluate_ppo_policy): its
    data.test (at most eval.max_examples), prompt style, token budgets, batch size,
    grader and seed. Returns the accuracies, the greedy solutions' shape (steps per
    solution, filler and repeated steps, length, truncation), the sampled solutions' steps
    and fillers, and a few greedy samples. What `rlr evaluate` writes."""
    from rlr.grading import Grader
    from rlr.training import loading
    from rlr.training.generation import rollout_settings, sampler_for

    model, params, tokenizer = loading.load_policy_dir(str(policy_dir), config.tokenizer or None)
    data = config.data
    problems = loading.load_problems(
        data.test, data.format, what="data.test", limit=config.eval.max_examples
    )
    results = {}
    with Grader(
        num_workers=config.grading.num_workers, timeout_s=config.grading.timeout_s
    ) as grader:
        for offset, temperature in enumerate((0.0, 1.0)):
            settings = rollout_settings(config.rollout, temperature=temperature)
            sampler = sampler_for(model, tokenizer, settings)
            results[temperature] = evaluate_ppo_policy(
                sampler, params, tokenizer, problems, config, grader=grader, key_offset=offset
            )
    greedy, sampled = results[0.0], results[1.0]
    return {
        "greedy_accuracy": greedy.accuracy,
        "sampling_accuracy": sampled.accuracy,
        "steps_per_solution": greedy.steps_per_solution,
        "filler_step_fraction": greedy.filler_step_fraction,
        "repeated_step_fraction": greedy.repeated_step_fraction,
        "response_length": greedy.response_length,
        "truncated_fraction": greedy.truncated_fraction,
        "sampled_steps_per_solution": sampled.steps_per_solution,
        "sampled_filler_step_fraction": sampled.filler_step_fraction,
        "samples": list(greedy.samples),
    }
