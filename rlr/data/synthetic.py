"""The synthetic task rlr trains on for CPU reproduction: multi-step arithmetic word problems.

A problem is GSM8K-shaped but tiny and closed-vocabulary:

    Question: Tom has 3 apples. Tom buys 4 more apples. Tom gives 2 apples to Ann.
              How many apples does Tom have now?
    Solution: Tom has 3 + 4 = 7 apples.
              Tom has 7 - 2 = 5 apples.
              The answer is 5.

One step per line, each a checkable computation, then the answer line. Every step is graded
exactly (`check_steps`); filler steps ("Step ready.") are correct but useless, which is the raw
PRM's blind spot that the policy learns to exploit (docs/method.md section 3).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import re
from collections.abc import Sequence

import numpy as np

from rlr.data.readers import write_jsonl
from rlr.data.records import Problem, StepLabelled
from rlr.data.segmentation import step_texts

NAMES = ("Tom", "Ann", "Sam", "Mia", "Ben", "Lily", "Max", "Zoe")
OBJECTS = ("apples", "pens", "books", "cards", "coins", "eggs", "shells", "stamps")
OPERATIONS = ("+", "-", "*")
FILLER_STEPS = (
    "Step ready.",
    "Step nothing.",
    "Let me think.",
    "Keep going.",
    "Next step.",
    "Check again.",
)
_TEMPLATES = {
    "+": (
        "{name} buys {b} more {obj}.",
        "{name} finds {b} more {obj}.",
        "{other} gives {name} {b} more {obj}.",
    ),
    "-": (
        "{name} gives {b} {obj} to {other}.",
        "{name} loses {b} {obj}.",
        "{name} sells {b} {obj}.",
    ),
    "*": ("Then {name} has {b} times as many {obj}.",),
}
_COMPUTE = re.compile(r"^([A-Z][a-z]+) has (\d+) ([-+*]) (\d+) = (\d+) ([a-z]+)\.$")
_ANSWER = re.compile(r"^The answer is (\d+)\.$")
_SEPARATORS = ("\n",)


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _check_knobs(
    min_operations: int, max_operations: int, max_digits: int, operations: Sequence[str]
):
    if not 1 <= min_operations <= max_operations:
        raise ValueError(
            f"need 1 <= min_operations <= max_operations; got {min_operations}, {max_operations}"
        )
    if max_digits < 1:
        raise ValueError(f"max_digits must be >= 1; got {max_digits}")
    bad = [op for op in operations if op not in OPERATIONS]
    if bad or not operations:
        raise ValueError(f"operations must be a non-empty subset of {OPERATIONS}; got {operations}")


def generate_problem(
    rng: np.random.Generator,
    *,
    index: int = 0,
    min_operations: int = 2,
    max_operations: int = 4,
    max_digits: int = 2,
    operations: Sequence[str] = OPERATIONS,
) -> Problem:
    """One random problem with its gold solution; every value stays in [0, 10**max_digits).

    meta holds name, object, other (a second name), start, ops ([[op, b], ...]) and values
    (the running total after each step, values[0] = start).
    """
    _check_knobs(min_operations, max_operations, max_digits, operations)
    limit = 10**max_digits
    name, other = (str(x) for x in rng.choice(NAMES, size=2, replace=False))
    obj = str(rng.choice(OBJECTS))
    num_steps = int(rng.integers(min_operations, max_operations + 1))
    value = int(rng.integers(1, limit))
    start = value
    ops: list[list] = []
    values = [value]
    sentences = [f"{name} has {value} {obj}."]
    for _ in range(num_steps):
        choices = [str(op) for op in rng.permutation(list(operations))]
        for op in choices:
            if op == "+" and value < limit - 1:
                b = int(rng.integers(1, limit - value))
            elif op == "-" and value > 0:
                b = int(rng.integers(1, value + 1))
            elif op == "*" and 2 * value < limit:
                b = int(rng.integers(2, min(10, (limit - 1) // max(value, 1) + 1)))
            else:
                continue
            break
        else:
            op, b = "+", 0  # only reachable with operations=("*",) at a large value
        template = str(rng.choice(_TEMPLATES[op]))
        sentences.append(template.format(name=name, other=other, obj=obj, b=b))
        value = _apply(value, op, b)
        ops.append([op, b])
        values.append(value)
    sentences.append(f"How many {obj} does {name} have now?")
    meta = {
        "name": name,
        "object": obj,
        "other": other,
        "start": start,
        "ops": ops,
        "values": values,
    }
    return Problem(
        id=f"synthetic-{index}",
        question=" ".join(sentences),
        answer=str(value),
        solution=gold_solution(meta),
        source="synthetic",
        meta=meta,
    )


def gold_solution(meta: dict) -> str:
    """The gold solution text of a problem from its meta: one computation per line, then answer."""
    lines = []
    for (op, b), a, c in zip(meta["ops"], meta["values"], meta["values"][1:]):
        lines.append(f"{meta['name']} has {a} {op} {b} = {c} {meta['object']}.")
    lines.append(f"The answer is {meta['values'][-1]}.")
    return "\n".join(lines)


def generate_problems(
    num_problems: int,
    *,
    seed: int,
    min_operations: int = 2,
    max_operations: int = 4,
    max_digits: int = 2,
    operations: Sequence[str] = OPERATIONS,
) -> list[Problem]:
    """`num_problems` problems, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    return [
        generate_problem(
            rng,
            index=i,
            min_operations=min_operations,
            max_operations=max_operations,
            max_digits=max_digits,
            operations=operations,
        )
        for i in range(num_problems)
    ]


@dataclasses.dataclass(frozen=True)
class StepVerdict:
    """Grade of one solution step: `kind` is "compute", "answer", "filler" or "invalid"."""

    correct: bool
    filler: bool
    kind: str


def grade_steps(problem: Problem, solution_text: str) -> list[StepVerdict]:
    """Grade every line-step of `solution_text` against `problem` (a synthetic Problem).

    The i-th computation line is correct iff it names the problem's person and object, uses the
    gold operands and operator of step i, and its result is arithmetically right. The answer
    line is correct iff it states the gold answer. A filler line is correct but flagged as
    filler. Anything else, and computations beyond the gold step count, are incorrect.
    """
    meta = problem.meta
    ops, values = meta["ops"], meta["values"]
    verdicts = []
    computed = 0
    for line in step_texts(solution_text, separators=_SEPARATORS):
        if line in FILLER_STEPS:
            verdicts.append(StepVerdict(True, True, "filler"))
            continue
        answer = _ANSWER.match(line)
        if answer:
            verdicts.append(StepVerdict(answer.group(1) == problem.answer, False, "answer"))
            continue
        match = _COMPUTE.match(line)
        if not match:
            verdicts.append(StepVerdict(False, False, "invalid"))
            continue
        name, a, op, b, c, obj = match.groups()
        a, b, c = int(a), int(b), int(c)
        right = (
            computed < len(ops)
            and name == meta["name"]
            and obj == meta["object"]
            and [op, b] == list(ops[computed])
            and a == values[computed]
            and c == _apply(a, op, b)
        )
        verdicts.append(StepVerdict(bool(right), False, "compute"))
        computed += 1
    return verdicts


def check_steps(problem: Problem, solution_text: str) -> list[bool]:
    """Per-step exact correctness of `solution_text` (`grade_steps`); fillers are correct."""
    return [v.correct for v in grade_steps(problem, solution_text)]


def final_answer(solution_text: str) -> str | None:
    """The number stated by the last "The answer is N." line, or None."""
    for line in reversed(step_texts(solution_text, separators=_SEPARATORS)):
        match = _ANSWER.match(line)
        if match:
            return match.group(1)
    return None


def corrupt_solution(problem: Problem, *, first_error_step: int, rng: np.random.Generator) -> str:
    """A solution whose first wrong step is computation `first_error_step` (1-based).

    The error is either arithmetic (wrong result) or a wrong operand (right arithmetic on a
    wrong quantity); later steps compute correctly from the wrong running value, so they and
    the answer line are wrong too.
    """
    meta = problem.meta
    ops, values = meta["ops"], meta["values"]
    if not 1 <= first_error_step <= len(ops):
        raise ValueError(
            f"first_error_step must be in 1..{len(ops)} for problem {problem.id};"
            f" got {first_error_step}"
        )
    j = first_error_step - 1
    name, obj = meta["name"], meta["object"]
    lines = [
        f"{name} has {values[k]} {op} {b} = {values[k + 1]} {obj}."
        for k, (op, b) in enumerate(ops[:j])
    ]
    a = values[j]
    op, b = ops[j]
    right = _apply(a, op, b)
    delta = int(rng.integers(1, 4))
    # Candidate errors, (stated operand, stated result), in random order; the plain overshoot
    # right + delta comes last as the fallback that always works.
    candidates = [(b + delta, _apply(a, op, b + delta)), (b, right - delta)]
    if op != "*" and b - delta >= 1:
        candidates.append((b - delta, _apply(a, op, b - delta)))
    candidates = [candidates[i] for i in rng.permutation(len(candidates))] + [(b, right + delta)]
    for candidate in candidates:
        stated_b, value = candidate
        rest = _continue(value, ops[j + 1 :])
        if value != right and value >= 0 and rest is not None and rest[-1] != values[-1]:
            break
    lines.append(f"{name} has {a} {op} {stated_b} = {value} {obj}.")
    for (op, b), new in zip(ops[j + 1 :], rest[1:]):
        lines.append(f"{name} has {value} {op} {b} = {new} {obj}.")
        value = new
    lines.append(f"The answer is {value}.")
    return "\n".join(lines)


MISREAD_PHRASING = "{name} gives {b} {obj} to {other}."


def misread_steps(problem: Problem) -> list[int]:
    """1-based computations of `problem` phrased "<name> gives <b> <obj> to <other>." (a loss)."""
    meta = problem.meta
    sentences = re.split(r"(?<=[.?]) ", problem.question)[1 : 1 + len(meta["ops"])]
    return [
        k
        for k, (sentence, (op, b)) in enumerate(zip(sentences, meta["ops"]), 1)
        if op == "-"
        and sentence
        == MISREAD_PHRASING.format(name=meta["name"], b=b, obj=meta["object"], other=meta["other"])
    ]


def misread_solution(problem: Problem) -> str:
    """The solution of a reader who takes "<name> gives <b> <obj> to <other>." as a gift received.

    Every such step is computed as an addition (right arithmetic, wrong operation), the
    systematic error a model makes when it confuses who gives to whom; other steps compute
    correctly from the running value. The gold solution when no step is phrased that way.
    """
    meta = problem.meta
    misread = set(misread_steps(problem))
    name, obj = meta["name"], meta["object"]
    value, lines = meta["values"][0], []
    for k, (op, b) in enumerate(meta["ops"], 1):
        op = "+" if k in misread else op
        new = _apply(value, op, b)
        lines.append(f"{name} has {value} {op} {b} = {new} {obj}.")
        value = new
    lines.append(f"The answer is {value}.")
    return "\n".join(lines)


def _continue(value: int, ops: Sequence) -> list[int] | None:
    """Running values from `value` through `ops`, or None if one goes negative."""
    out = [value]
    for op, b in ops:
        out.append(_apply(out[-1], op, b))
        if out[-1] < 0:
            return None
    return out


def filler_step(rng: np.random.Generator) -> str:
    """A well-formed, correct and useless step such as "Step ready."."""
    return str(rng.choice(FILLER_STEPS))


def insert_fillers(solution_text: str, *, num_fillers: int, rng: np.random.Generator) -> str:
    """`solution_text` with `num_fillers` filler lines at random places before the answer line."""
    lines = step_texts(solution_text, separators=_SEPARATORS)
    body, last = lines[:-1], lines[-1:]
    for _ in range(num_fillers):
        body.insert(int(rng.integers(0, len(body) + 1)), filler_step(rng))
    return "\n".join(body + last)


FILLER_LABELS = ("correct", "no_progress")


def process_labels(
    problem: Problem, solution_text: str, *, filler_labels: str = "correct"
) -> tuple[list[str], list[int]]:
    """Steps and Math-Shepherd-style hard labels: +1 while every step so far is correct, then -1.

    filler_labels="correct" (the default) labels fillers before the first error +1: they are
    correct, which is exactly why a PRM trained on such labels rewards padding.
    filler_labels="no_progress" labels every filler -1 (a step that makes no progress) without
    ending the correct prefix, so the steps after it keep their own labels: a PRM trained on
    these labels scores filler below real steps (a "filler-aware" PRM).
    """
    if filler_labels not in FILLER_LABELS:
        raise ValueError(f"filler_labels must be one of {FILLER_LABELS}; got {filler_labels!r}")
    steps = step_texts(solution_text, separators=_SEPARATORS)
    labels, ok = [], True
    for verdict in grade_steps(problem, solution_text):
        if verdict.filler and filler_labels == "no_progress":
            labels.append(-1)
            continue
        ok = ok and verdict.correct
        labels.append(1 if ok else -1)
    return steps, labels


def make_datasets(
    *,
    num_train: int = 20000,
    num_test: int = 500,
    seed: int = 0,
    min_operations: int = 2,
    max_operations: int = 4,
    max_digits: int = 2,
    operations: Sequence[str] = OPERATIONS,
    sft_filler_fraction: float = 0.0,
    sft_slip_fraction: float = 0.0,
    sft_misread_fraction: float = 0.0,
    prm_misread_fraction: float = 0.0,
    prm_corrupt_fraction: float = 0.5,
    prm_filler_fraction: float = 0.3,
    prm_filler_labels: str = "correct",
) -> dict[str, list]:
    """Train/test problems, SFT solutions and PRM step-labelled solutions.

    - problems_train / problems_test: Problems with gold answers (RL prompts and evaluation);
      no test question appears in train.
    - sft_train: train Problems whose `solution` is the gold solution, with one harmless filler
      line inserted in a `sft_filler_fraction` of them (0 by default: a clean SFT policy). A
      `sft_slip_fraction` of them hold one slip instead, as demonstrations written by a model
      do: a wrong intermediate result carried through to a wrong answer (`corrupt_solution`,
      first wrong step uniform); meta["slip"] is that step (0: no slip). Slips draw from their
      own random stream, so a fraction of 0 leaves every other record as it was. Of the
      demonstrations whose problem has a step phrased "<name> gives <b> <obj> to <other>.", a
      `sft_misread_fraction` read every such step as a gift received (`misread_solution`): one
      systematic error, which the SFT policy's greedy decoding copies when the fraction is
      above one half, while sampling still finds the right reading; meta["misread"] is 1 for
      those (a demonstration never holds both a slip and a misreading).
    - prm_train / prm_test: one StepLabelled solution per problem: corrupted (first error step
      uniform) with probability `prm_corrupt_fraction`, else correct; then 1-2 fillers inserted
      with probability `prm_filler_fraction`. Labels follow `process_labels` with
      `prm_filler_labels` ("correct" or "no_progress"); meta["kind"] is "correct" or
      "corrupted" and meta["fillers"] the number of fillers. A `prm_misread_fraction` of the
      solutions whose problem has a misreadable step are the misreading instead (meta["kind"]
      "misread"), as a PRM trained on its policy's samples sees that policy's errors. The
      filler labels change no other record: the same seed gives the same problems and
      solutions either way.
    """
    fractions = dict(sft_filler_fraction=sft_filler_fraction, sft_slip_fraction=sft_slip_fraction)
    fractions.update(sft_misread_fraction=sft_misread_fraction)
    fractions.update(prm_misread_fraction=prm_misread_fraction)
    fractions.update(prm_corrupt_fraction=prm_corrupt_fraction)
    _check_fractions(**fractions, prm_filler_fraction=prm_filler_fraction)
    knobs = dict(min_operations=min_operations, max_operations=max_operations)
    knobs.update(max_digits=max_digits, operations=operations)
    train, test = _train_and_test_problems(num_train, num_test, seed, **knobs)
    rng, slip_rng, misread_rng = (np.random.default_rng([seed, k]) for k in (7, 13, 17))
    sft = _sft_records(
        train,
        rng=rng,
        slip_rng=slip_rng,
        misread_rng=misread_rng,
        filler_fraction=sft_filler_fraction,
        slip_fraction=sft_slip_fraction,
        misread_fraction=sft_misread_fraction,
    )
    prm = functools.partial(
        _prm_records,
        rng=rng,
        misread_rng=misread_rng,
        corrupt_fraction=prm_corrupt_fraction,
        filler_fraction=prm_filler_fraction,
        misread_fraction=prm_misread_fraction,
        filler_labels=prm_filler_labels,
    )
    return {
        "problems_train": train,
        "problems_test": test,
        "sft_train": sft,
        "prm_train": prm(train),  # the shared streams: train's records before test's
        "prm_test": prm(test),
    }


def _check_fractions(**fractions: float) -> None:
    """Each of make_datasets' fractions (by keyword) lies in [0, 1]."""
    for name, value in fractions.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1]; got {value}")


def _train_and_test_problems(
    num_train: int, num_test: int, seed: int, **knobs
) -> tuple[list[Problem], list[Problem]]:
    """Train and test problems (generate_problems with `knobs`), ids numbered per split; a
    train problem whose question is a test question is dropped."""
    test = generate_problems(num_test, seed=seed * 2 + 1, **knobs)
    test = [dataclasses.replace(p, id=f"synthetic-test-{i}") for i, p in enumerate(test)]
    test_questions = {p.question for p in test}
    train = [
        p
        for p in generate_problems(num_train, seed=seed * 2, **knobs)
        if p.question not in test_questions
    ]
    train = [dataclasses.replace(p, id=f"synthetic-train-{i}") for i, p in enumerate(train)]
    return train, test


def _sft_records(
    problems: list[Problem],
    *,
    rng: np.random.Generator,
    slip_rng: np.random.Generator,
    misread_rng: np.random.Generator,
    filler_fraction: float,
    slip_fraction: float,
    misread_fraction: float,
) -> list[Problem]:
    """make_datasets' sft_train: each problem's gold solution, or a slip or a misreading of it,
    with a filler line in a `filler_fraction` of them (draws from the three streams in order)."""
    sft = []
    for problem in problems:
        fillers = int(rng.random() < filler_fraction)
        slip = misread = 0
        text = problem.solution
        if slip_fraction and slip_rng.random() < slip_fraction:
            slip = int(slip_rng.integers(1, len(problem.meta["ops"]) + 1))
            text = corrupt_solution(problem, first_error_step=slip, rng=slip_rng)
        if misread_fraction and misread_steps(problem):
            misread = int(misread_rng.random() < misread_fraction)
        if misread:  # replaces a slip drawn for the same record; the slip stream stays aligned
            slip, text = 0, misread_solution(problem)
        text = insert_fillers(text, num_fillers=fillers, rng=rng)
        meta = {**problem.meta, "fillers": fillers, "slip": slip, "misread": misread}
        sft.append(dataclasses.replace(problem, solution=text, meta=meta))
    return sft


def _prm_records(
    problems: list[Problem],
    *,
    rng: np.random.Generator,
    misread_rng: np.random.Generator,
    corrupt_fraction: float,
    filler_fraction: float,
    misread_fraction: float,
    filler_labels: str,
) -> list[StepLabelled]:
    """make_datasets' prm_train / prm_test: one StepLabelled solution per problem, misread,
    corrupted or correct, with 1-2 fillers in a `filler_fraction` of them."""
    records = []
    for problem in problems:
        corrupted = rng.random() < corrupt_fraction
        misread = (
            misread_fraction > 0
            and bool(misread_steps(problem))
            and misread_rng.random() < misread_fraction
        )
        if misread:
            text = misread_solution(problem)
        elif corrupted:
            first = int(rng.integers(1, len(problem.meta["ops"]) + 1))
            text = corrupt_solution(problem, first_error_step=first, rng=rng)
        else:
            text = problem.solution
        fillers = int(rng.integers(1, 3)) if rng.random() < filler_fraction else 0
        text = insert_fillers(text, num_fillers=fillers, rng=rng)
        steps, labels = process_labels(problem, text, filler_labels=filler_labels)
        records.append(
            StepLabelled(
                id=problem.id,
                question=problem.question,
                steps=tuple(steps),
                labels=tuple(labels),
                gold_answer=problem.answer,
                source="synthetic",
                meta={
                    "kind": "misread" if misread else "corrupted" if corrupted else "correct",
                    "fillers": fillers,
                },
            )
        )
    return records


def write_datasets(out_dir: str | os.PathLike, **knobs) -> dict[str, int]:
    """Write `make_datasets(**knobs)` as <name>.jsonl files plus manifest.json to `out_dir`.

    Returns the number of records per file. Read back with `read_problems` (problems_*, sft_*)
    and `read_step_labelled` (prm_*).
    """
    out_dir = pathlib.Path(out_dir)
    datasets = make_datasets(**knobs)
    counts = {
        name: write_jsonl(out_dir / f"{name}.jsonl", records) for name, records in datasets.items()
    }
    manifest = {
        "knobs": {k: list(v) if isinstance(v, tuple) else v for k, v in knobs.items()},
        "counts": counts,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return counts


def training_corpus(*, num_problems: int = 5000, seed: int = 0) -> list[str]:
    """Tokenizer training texts: prompts with gold solutions, corrupted and padded solutions."""
    from rlr.data.prompts import build_prompt

    rng = np.random.default_rng([seed, 11])
    texts = list(FILLER_STEPS)
    for problem in generate_problems(num_problems, seed=seed):
        texts.append(build_prompt(problem.question) + problem.solution)
        first = int(rng.integers(1, len(problem.meta["ops"]) + 1))
        wrong = corrupt_solution(problem, first_error_step=first, rng=rng)
        texts.append(insert_fillers(wrong, num_fillers=int(rng.integers(0, 3)), rng=rng))
    return texts
