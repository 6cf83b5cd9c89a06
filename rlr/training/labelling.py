"""Math-Shepherd step labels by Monte-Carlo completion (or by a PRM's scores, `--prm`):
`rlr label-steps`.

For every step prefix p(k) of a solution, a completer policy writes N continuations; each full
text (prefix + continuation) is graded against the gold answer. The soft label of step k is the
fraction of continuations that reach the right answer, the hard label is 1 when any does
(Wang et al. 2024, "Math-Shepherd"). The last step holds the final answer, so its prefix is the
whole solution: its label is the solution's own grade, with no completions.

Output is StepLabelled JSONL that `rlr.data.read_step_labelled` reads: `labels` are the hard
labels as +1 (some completion is right) / -1 (none is), and the soft labels, one float in
[0, 1] per step, are in `meta["soft_labels"]`. A solution with more than `max_steps` steps keeps
only its first `max_steps` steps (meta["truncated"] is then true).

All completions of all prefixes go through the sampler in fixed-shape batches
(rlr.training.pipeline.sample_and_judge), so the sampler compiles once per prompt width.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from rlr.data.records import Problem, StepLabelled
from rlr.data.segmentation import DEFAULT_SEPARATORS, split_steps
from rlr.training.pipeline import sample_and_judge

Completer = Callable[[Sequence[str]], list[str]]


class PolicyCompleter:
    """A `Completer`: maps prompts to sampled continuation texts with an rlr Sampler.

    Every call draws from a fresh key, fold_in(key, call number), so a run is deterministic
    in the seed, the order of calls and the batch size.
    """

    def __init__(
        self,
        sampler: Any,
        params: Any,
        tokenizer: Any,
        *,
        batch_size: int,
        key: jax.Array,
        show_progress: bool = False,
    ):
        self.sampler, self.params, self.tokenizer = sampler, params, tokenizer
        self.batch_size = batch_size
        self.key = key
        self.show_progress = show_progress
        self.calls = 0

    def __call__(self, prompts: Sequence[str]) -> list[str]:
        """The sampled continuation of each prompt (special tokens dropped)."""
        from tqdm.auto import tqdm

        key = jax.random.fold_in(self.key, self.calls)
        self.calls += 1
        with tqdm(
            total=len(prompts), desc="sampling", disable=not self.show_progress, dynamic_ncols=True
        ) as bar:
            judged = sample_and_judge(
                self.sampler,
                self.params,
                self.tokenizer,
                prompts,
                None,  # a continuation is graded with its prefix (label_solutions)
                key=key,
                batch_size=self.batch_size,
                progress=bar,
            )
        return judged.texts


def monte_carlo_labels(
    correct: np.ndarray,  # [J, N] bool: completion n of prefix j reached the gold answer
) -> tuple[np.ndarray, np.ndarray]:  # soft [J] float32 in [0, 1], hard [J] int32 in {0, 1}
    """Math-Shepherd soft (fraction correct) and hard (any correct) labels per prefix."""
    correct = np.asarray(correct, bool)
    if correct.ndim != 2 or correct.shape[1] < 1:
        raise ValueError(f"correct must be [J, N] with N >= 1; got shape {correct.shape}")
    return correct.mean(axis=1).astype(np.float32), correct.any(axis=1).astype(np.int32)


def sample_solutions(
    complete: Completer, prompts: Sequence[str], *, num_samples: int
) -> list[list[str]]:
    """`num_samples` solutions per prompt: out[i][m] is sample m of prompt i."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1; got {num_samples}")
    texts = complete([p for p in prompts for _ in range(num_samples)])
    return [texts[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]


def split_solutions(
    solutions: Sequence[Sequence[str]], *, separators: Sequence[str] = DEFAULT_SEPARATORS
) -> tuple[list[tuple[int, int, str, list[tuple[int, int]]]], int]:
    """(entries, skipped): (problem index i, sample index m, text, step character spans) of
    every solutions[i][m] with at least one step, and how many had none."""
    entries, skipped = [], 0
    for i, texts in enumerate(solutions):
        for m, text in enumerate(texts):
            spans = split_steps(text, separators=separators)
            if spans:
                entries.append((i, m, text, spans))
            else:
                skipped += 1
    return entries, skipped


@dataclasses.dataclass(frozen=True)
class LabellingResult:
    """Labelled solutions plus what was skipped and how long each stage took."""

    records: list[StepLabelled]
    skipped_empty: int  # solutions with no step at all (nothing to label)
    num_completions: int  # continuations sampled in total
    seconds: dict[str, float]


def label_solutions(
    problems: Sequence[Problem],
    prompts: Sequence[str],
    solutions: Sequence[Sequence[str]],
    *,
    complete: Completer,
    grader: Any,
    num_completions: int,
    separators: Sequence[str] = DEFAULT_SEPARATORS,
    max_steps: int = 16,
) -> LabellingResult:
    """Math-Shepherd labels for solutions[i][m], a solution of problems[i] shown after prompts[i].

    Step k < K of a solution is labelled from `num_completions` continuations of
    prompts[i] + the solution text up to the start of step k + 1 (separator included); step K
    from the solution's own grade. `complete(prompts) -> texts` writes one continuation per
    prompt (a PolicyCompleter, or any function); `grader.grade_responses(texts, golds)` grades
    the full texts. All continuations are requested in one `complete` call and graded in one
    `grade_responses` call.
    """
    if not len(problems) == len(prompts) == len(solutions):
        raise ValueError(
            f"problems, prompts and solutions must have one entry per problem; got "
            f"{len(problems)}, {len(prompts)} and {len(solutions)}"
        )
    if num_completions < 1 or max_steps < 1:
        raise ValueError(
            f"num_completions and max_steps must be >= 1; got {num_completions}, {max_steps}"
        )
    missing = [p.id for p in problems if p.answer is None]
    if missing:
        raise ValueError(f"problems without a gold answer cannot be labelled: {missing[:5]}")
    t0 = time.perf_counter()
    split, skipped = split_solutions(solutions, separators=separators)
    entries, jobs = _prefix_jobs(split, max_steps=max_steps)
    job_prefixes = [entries[e][2][:end] for e, _, end in jobs]
    job_golds = [problems[entries[e][0]].answer for e, _, _ in jobs]
    job_prompts = [prompts[entries[e][0]] + prefix for (e, *_), prefix in zip(jobs, job_prefixes)]
    repeated = [p for p in job_prompts for _ in range(num_completions)]
    continuations = complete(repeated) if repeated else []
    if len(continuations) != len(repeated):
        raise ValueError(
            f"the completer returned {len(continuations)} texts for {len(repeated)} prompts"
        )
    t1 = time.perf_counter()
    full_texts = [
        job_prefixes[j // num_completions] + continuations[j] for j in range(len(repeated))
    ]
    golds = [g for g in job_golds for _ in range(num_completions)]
    own = [(text, problems[i].answer) for i, _, text, _, _ in entries]
    verdicts = grader.grade_responses(full_texts + [t for t, _ in own], golds + [g for _, g in own])
    t2 = time.perf_counter()
    completion_correct = np.asarray(verdicts[: len(full_texts)], bool).reshape(
        len(jobs), num_completions
    )
    solution_correct = verdicts[len(full_texts) :]
    soft_by_job, hard_by_job = (
        monte_carlo_labels(completion_correct) if jobs else (np.zeros(0), np.zeros(0))
    )
    soft = [
        [1.0 if solution_correct[e] else 0.0] * len(entry[3]) for e, entry in enumerate(entries)
    ]
    hard = [[int(solution_correct[e])] * len(entry[3]) for e, entry in enumerate(entries)]
    for j, (e, k, _) in enumerate(jobs):
        soft[e][k] = float(soft_by_job[j])
        hard[e][k] = int(hard_by_job[j])
    records = [
        _monte_carlo_record(
            problems[i], entries[e], soft[e], hard[e], bool(solution_correct[e]), num_completions
        )
        for e, (i, *_) in enumerate(entries)
    ]
    return LabellingResult(
        records=records,
        skipped_empty=skipped,
        num_completions=len(repeated),
        seconds={"completion": t1 - t0, "grading": t2 - t1},
    )


def _prefix_jobs(
    split: Sequence[tuple[int, int, str, list[tuple[int, int]]]], *, max_steps: int
) -> tuple[list[tuple[int, int, str, list[tuple[int, int]], bool]], list[tuple[int, int, int]]]:
    """(entries, jobs) of split solutions: each entry (problem index, sample index, text, the
    spans of its first max_steps steps, truncated), and each job (entry index, step k, end) a
    prefix text[:end] through step k that needs continuations: every kept step but a complete
    solution's last, which holds the final answer and is labelled by the solution's grade."""
    entries, jobs = [], []
    for i, m, text, spans in split:
        truncated = len(spans) > max_steps
        kept = len(spans[:max_steps])
        # The prefix through step k ends where step k + 1 starts: the separator is kept.
        ks = range(kept if truncated else kept - 1)
        jobs += [(len(entries), k, spans[k + 1][0]) for k in ks]
        entries.append((i, m, text, spans[:max_steps], truncated))
    return entries, jobs


def _labelled_record(
    problem: Problem,
    sample: int,
    solution: str,
    steps: Sequence[str],
    soft: Sequence[float],  # [K] soft labels
    good: Sequence[bool],  # [K] hard labels
    *,
    source: str,
    solution_correct: bool,
    truncated: bool,
    **meta: Any,
) -> StepLabelled:
    """The StepLabelled record of sample `sample` of `problem`, labelled +1 / -1 by `good`,
    with the soft labels, the solution, its grade and truncation (and `meta`) in its meta."""
    return StepLabelled(
        id=f"{problem.id}-s{sample}",
        question=problem.question,
        steps=tuple(steps),
        labels=tuple(1 if g else -1 for g in good),
        gold_answer=problem.answer,
        source=source,
        meta={
            "problem_id": problem.id,
            "sample": sample,
            "soft_labels": [round(float(x), 6) for x in soft],
            **meta,
            "solution_correct": bool(solution_correct),
            "truncated": bool(truncated),
            "solution": solution,
        },
    )


def _monte_carlo_record(
    problem: Problem,
    entry: tuple[int, int, str, list[tuple[int, int]], bool],
    soft: list[float],  # [K] soft labels
    hard: list[int],  # [K] 1 / 0 hard labels
    solution_correct: bool,
    num_completions: int,
) -> StepLabelled:
    """The StepLabelled record of one labelled solution (`_prefix_jobs`' entry)."""
    _, m, text, spans, truncated = entry
    return _labelled_record(
        problem,
        m,
        text,
        [text[a:b] for a, b in spans],
        soft,
        [bool(h) for h in hard],
        source="monte_carlo",
        solution_correct=solution_correct,
        truncated=truncated,
        num_completions=num_completions,
    )


def label_with_prm(
    problems: Sequence[Problem],
    solutions: Sequence[Sequence[str]],
    *,
    scorer: Any,
    grader: Any,
    threshold: float = 0.5,
    separators: Sequence[str] = DEFAULT_SEPARATORS,
    max_steps: int = 16,
) -> LabellingResult:
    """Step labels from a PRM instead of completions: the soft label of a step is the PRM's
    probability (`scorer.score_steps`, any rlr.models step format), the hard label +1 when it
    is at least `threshold`, else -1. Records match label_solutions' (meta["labeller"] names
    the PRM's format), so a released PRM can be distilled into an rlr PRM."""
    if len(problems) != len(solutions):
        raise ValueError(f"{len(problems)} problems but {len(solutions)} solution lists")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"the PRM threshold must lie in [0, 1]; got {threshold}")
    t0 = time.perf_counter()
    split, skipped = split_solutions(solutions, separators=separators)
    entries = [
        (i, m, text, tuple(text[a:b] for a, b in spans[:max_steps]), len(spans) > max_steps)
        for i, m, text, spans in split
    ]
    scores = scorer.score_steps(
        [problems[i].question for i, *_ in entries],
        [[step.strip() for step in steps] for *_, steps, _ in entries],
    )
    t1 = time.perf_counter()
    correct = grader.grade_responses(
        [text for _, _, text, _, _ in entries], [problems[i].answer for i, *_ in entries]
    )
    t2 = time.perf_counter()
    records = []
    for (i, m, text, steps, truncated), soft, right in zip(entries, scores, correct):
        records.append(
            _labelled_record(
                problems[i],
                m,
                text,
                steps,
                soft,
                [p >= threshold for p in soft],
                source="prm",
                solution_correct=right,
                truncated=truncated,
                labeller=f"prm:{scorer.format.name}",
            )
        )
    return LabellingResult(records, skipped, 0, {"scoring": t1 - t0, "grading": t2 - t1})


# ----------------------------------------------------------------- agreement


def label_agreement(
    hard: Sequence[int],  # [J] 1 / 0 (or +1 / -1) Monte-Carlo hard labels
    soft: Sequence[float],  # [J] Monte-Carlo soft labels in [0, 1]
    truth: Sequence[int],  # [J] exact labels: 1 / +1 prefix still correct, 0 / -1 not
) -> dict[str, float]:
    """How well Monte-Carlo labels match exact step labels, over J steps.

    hard_accuracy: fraction of steps whose hard label equals the truth; precision / recall of
    the hard label for "correct"; soft_mean_true_correct / soft_mean_true_wrong: the mean soft
    label on truly correct / truly wrong steps (NaN where there are none).
    """
    hard_b = np.asarray(hard) > 0
    truth_b = np.asarray(truth) > 0
    soft_a = np.asarray(soft, np.float64)
    if not hard_b.shape == truth_b.shape == soft_a.shape or hard_b.ndim != 1:
        raise ValueError(
            f"hard, soft and truth must be equal-length lists; got {hard_b.shape}, "
            f"{soft_a.shape}, {truth_b.shape}"
        )
    if soft_a.size and (soft_a.min() < 0 or soft_a.max() > 1):
        raise ValueError("soft labels must lie in [0, 1]")

    def mean(x: np.ndarray) -> float:
        return float(x.mean()) if x.size else float("nan")

    true_positive = int(np.sum(hard_b & truth_b))
    return {
        "num_steps": int(hard_b.size),
        "num_true_correct": int(truth_b.sum()),
        "num_true_wrong": int((~truth_b).sum()),
        "hard_accuracy": mean((hard_b == truth_b).astype(np.float64)),
        "hard_precision": true_positive / max(int(hard_b.sum()), 1),
        "hard_recall": true_positive / max(int(truth_b.sum()), 1),
        "soft_mean_true_correct": mean(soft_a[truth_b]),
        "soft_mean_true_wrong": mean(soft_a[~truth_b]),
    }


def is_synthetic(problem: Problem) -> bool:
    """Whether `problem` comes from rlr.data.synthetic (so its steps can be graded exactly)."""
    return problem.source == "synthetic" and {"ops", "values", "name"} <= set(problem.meta)


def synthetic_agreement(
    records: Sequence[StepLabelled], problems: Sequence[Problem]
) -> dict[str, float]:
    """`label_agreement` of Monte-Carlo labelled records with the synthetic task's exact labels.

    The exact label of step k is `rlr.data.synthetic.process_labels`: +1 while every step so
    far is correct. Records are matched to problems by meta["problem_id"]; a record whose
    steps do not re-split into the same number of lines is counted in `num_unmatched` and left
    out.
    """
    from rlr.data.synthetic import process_labels

    by_id = {p.id: p for p in problems}
    hard, soft, truth = [], [], []
    unmatched = 0
    for record in records:
        problem = by_id.get(record.meta.get("problem_id", ""))
        if problem is None or not is_synthetic(problem):
            raise ValueError(
                f"record {record.id!r}: meta['problem_id'] names no synthetic problem among "
                f"the {len(problems)} given; pass the problems the records were labelled from"
            )
        steps, exact = process_labels(problem, "\n".join(record.steps))
        if len(steps) != len(record.steps):
            unmatched += 1
            continue
        hard += list(record.labels)
        soft += list(record.meta["soft_labels"])
        truth += exact
    result = label_agreement(hard, soft, truth)
    result["num_unmatched"] = unmatched
    return result


# ---------------------------------------------------------------------- CLI


def labelling_summary(
    problems: Sequence[Problem], result: LabellingResult, *, solutions_seconds: float
) -> dict[str, Any]:
    """What `rlr label-steps` prints: counts, label and solution rates, seconds per stage,
    and on the synthetic task the agreement with its exact labels."""
    steps = sum(len(r.steps) for r in result.records)
    summary = {
        "problems": len(problems),
        "solutions_labelled": len(result.records),
        "solutions_without_steps": result.skipped_empty,
        "steps_labelled": steps,
        "completions_sampled": result.num_completions,
        "positive_hard_fraction": (
            sum(y > 0 for r in result.records for y in r.labels) / max(steps, 1)
        ),
        "solution_accuracy": (
            sum(r.meta["solution_correct"] for r in result.records) / max(len(result.records), 1)
        ),
        "seconds_solutions": round(solutions_seconds, 3),
        **{f"seconds_{k}": round(v, 3) for k, v in result.seconds.items()},
    }
    if result.records and all(is_synthetic(p) for p in problems):
        summary["agreement_with_exact_labels"] = synthetic_agreement(result.records, problems)
    return summary
