"""JSONL readers for GSM8K, MATH (incl. MATH500), MathInstruct, PRM800K and Math-Shepherd.

Every reader takes a path and returns a `ReadResult`: the parsed records, in file order, and
the 1-based line numbers of the malformed lines it skipped. A malformed line raises
`MalformedRecordError` naming the file, the line and what is wrong, unless
`skip_malformed=True`, in which case it is skipped and counted. Blank lines are ignored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from rlr.data.answers import answer_from_text, last_boxed, strip_calculator_notes
from rlr.data.records import Problem, StepLabelled

R = TypeVar("R")

MATH_SHEPHERD_TAG = "ки"
_STEP_PREFIX = re.compile(r"^\s*Step \d+:\s*")


class MalformedRecordError(ValueError):
    """A line of a dataset file could not be parsed; the message names file and line."""


class _Malformed(Exception):
    """Raised by the per-record parsers; turned into MalformedRecordError with the location."""


@dataclasses.dataclass(frozen=True)
class ReadResult(Generic[R]):
    """Records read from one file and the 1-based line numbers of skipped malformed lines."""

    records: list[R]
    skipped_lines: list[int]

    @property
    def num_skipped(self) -> int:
        """How many malformed lines were skipped."""
        return len(self.skipped_lines)

    def __iter__(self) -> Iterator[R]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> R:
        return self.records[index]


# The end of a malformed line's message; commands replace it with their own flag (or none).
FIX_HINT = "fix the line or pass skip_malformed=True"


def read_jsonl(
    path: str | os.PathLike,
    parse: Callable[[dict[str, Any], str], R],
    *,
    skip_malformed: bool = False,
) -> ReadResult[R]:
    """Parse each non-blank line of `path` as JSON and then with `parse(obj, default_id)`.

    `default_id` is "<file stem>-<line number>", for sources without their own ids.
    """
    path = pathlib.Path(path)
    records: list[R] = []
    skipped: list[int] = []
    with path.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise _Malformed(f"invalid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(obj, dict):
                    raise _Malformed(f"expected a JSON object, got {type(obj).__name__}")
                records.append(parse(obj, f"{path.stem}-{line_number}"))
            except _Malformed as e:
                if not skip_malformed:
                    raise MalformedRecordError(f"{path}:{line_number}: {e}; {FIX_HINT}") from None
                skipped.append(line_number)
    return ReadResult(records, skipped)


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...] = str) -> Any:
    if name not in obj:
        raise _Malformed(f"missing field {name!r} (fields present: {sorted(obj)})")
    value = obj[name]
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise _Malformed(f"field {name!r} must be {names}, got {type(value).__name__}")
    return value


def parse_gsm8k(obj: dict[str, Any], default_id: str) -> Problem:
    """One GSM8K record: `question`, `answer` = solution steps then `#### N`.

    The gold answer is the text after `####` with thousands separators removed. The solution
    has its `<<a*b=c>>` calculator notes stripped; the raw text stays in
    meta["solution_with_calculator"].
    """
    question = _field(obj, "question")
    raw = _field(obj, "answer")
    if "####" not in raw:
        raise _Malformed("field 'answer' has no '#### <final answer>' marker")
    body, _, final = raw.rpartition("####")
    gold = final.strip().replace(",", "")
    if not gold:
        raise _Malformed("field 'answer' has an empty final answer after '####'")
    return Problem(
        id=str(obj.get("id", default_id)),
        question=question,
        answer=gold,
        solution=strip_calculator_notes(body).strip(),
        source="gsm8k",
        meta={"solution_with_calculator": body.strip()},
    )


def parse_math(obj: dict[str, Any], default_id: str) -> Problem:
    """One MATH record: `problem`, `solution`, `level`, `type` or `subject`, optional `answer`.

    The gold answer is the `answer` field when present (MATH500), else the last `\\boxed{}` of
    the solution. meta keeps level, subject, unique_id and the boxed answer of the solution.
    """
    question = _field(obj, "problem")
    solution = _field(obj, "solution")
    boxed = last_boxed(solution)
    if "answer" in obj:
        gold = _field(obj, "answer")
    elif boxed is not None:
        gold = boxed
    else:
        raise _Malformed("no 'answer' field and no \\boxed{...} in 'solution'")
    meta: dict[str, Any] = {"boxed": boxed}
    for key in ("level", "type", "subject", "unique_id"):
        if key in obj:
            meta[key] = obj[key]
    if "subject" not in meta and "type" in meta:
        meta["subject"] = meta["type"]
    return Problem(
        id=str(obj.get("unique_id", default_id)),
        question=question,
        answer=gold,
        solution=solution,
        source="math",
        meta=meta,
    )


def parse_mathinstruct(obj: dict[str, Any], default_id: str) -> Problem:
    """One MathInstruct record: `instruction`, `output`, `source`.

    Gold answer: last `\\boxed{}` of the output, else its final 'The answer is X'; None for
    outputs with neither (program-of-thought records).
    """
    instruction = _field(obj, "instruction")
    output = _field(obj, "output")
    return Problem(
        id=str(obj.get("id", default_id)),
        question=instruction,
        answer=answer_from_text(output),
        solution=output,
        source="mathinstruct",
        meta={"origin": obj.get("source", "")},
    )


def parse_prm800k(obj: dict[str, Any], default_id: str) -> StepLabelled:
    """One PRM800K record: question.problem, label.steps[*].completions[*].{text, rating}.

    The labelled trajectory follows, at each step, the chosen completion, else the human
    completion (rating +1 when unrated), else the first completion (the step where the
    labeller stopped). Ratings are -1/0/+1.
    """
    question = _field(obj, "question", dict)
    label = _field(obj, "label", dict)
    problem = _field(question, "problem")
    steps: list[str] = []
    labels: list[int] = []
    for k, step in enumerate(_field(label, "steps", list), start=1):
        if not isinstance(step, dict):
            raise _Malformed(f"label.steps[{k}] must be an object")
        completions = step.get("completions") or []
        chosen = step.get("chosen_completion")
        human = step.get("human_completion")
        if chosen is not None:
            if not isinstance(chosen, int) or not 0 <= chosen < len(completions):
                raise _Malformed(f"label.steps[{k}].chosen_completion={chosen!r} is out of range")
            completion, default_rating = completions[chosen], None
        elif human is not None:
            completion, default_rating = human, 1
        elif completions:
            completion, default_rating = completions[0], None
        else:
            raise _Malformed(f"label.steps[{k}] has no completions")
        text = completion.get("text") if isinstance(completion, dict) else None
        rating = completion.get("rating", default_rating) if isinstance(completion, dict) else None
        rating = default_rating if rating is None else rating
        if not isinstance(text, str) or rating not in (-1, 0, 1):
            raise _Malformed(f"label.steps[{k}] needs a text and a rating in -1/0/+1")
        steps.append(text)
        labels.append(int(rating))
    if not steps:
        raise _Malformed("label.steps is empty")
    gold = question.get("ground_truth_answer")
    return StepLabelled(
        id=str(obj.get("id", default_id)),
        question=problem,
        steps=tuple(steps),
        labels=tuple(labels),
        gold_answer=gold if isinstance(gold, str) else None,
        source="prm800k",
        meta={"finish_reason": label.get("finish_reason"), "generation": obj.get("generation")},
    )


def parse_math_shepherd(obj: dict[str, Any], default_id: str) -> StepLabelled:
    """One Math-Shepherd record: `input` with steps ending in the tag "ки", `label` with +/-.

    `label` must equal `input` with each tag replaced by "+" or "-". The question is the text
    before "Step 1:"; step texts lose their "Step k:" prefix. Labels are hard: + -> +1, - -> -1.
    """
    text = _field(obj, "input")
    labelled = _field(obj, "label")
    pieces = text.split(MATH_SHEPHERD_TAG)
    if len(pieces) < 2:
        raise _Malformed(f"field 'input' has no step tag {MATH_SHEPHERD_TAG!r}")
    labels: list[int] = []
    position = 0
    for piece in pieces[:-1]:
        position += len(piece)
        if position >= len(labelled) or labelled[position] not in "+-":
            raise _Malformed(
                f"field 'label' has no '+' or '-' where 'input' has step tag {len(labels) + 1}"
            )
        labels.append(1 if labelled[position] == "+" else -1)
        position += 1
    expected = "".join(p + ("+" if y == 1 else "-") for p, y in zip(pieces, labels)) + pieces[-1]
    if expected != labelled:
        raise _Malformed("field 'label' differs from 'input' outside the step tags")
    first = pieces[0]
    match = re.search(r"Step 1:", first)
    if match is None:
        raise _Malformed("field 'input' has no 'Step 1:' separating question and steps")
    question = first[: match.start()].strip()
    pieces = [first[match.start() :]] + pieces[1:-1]
    steps = tuple(_STEP_PREFIX.sub("", p).strip() for p in pieces)
    stated = answer_from_text(steps[-1])
    return StepLabelled(
        id=str(obj.get("id", default_id)),
        question=question,
        steps=steps,
        labels=tuple(labels),
        gold_answer=None,
        source="math_shepherd",
        meta={"task": obj.get("task", ""), "stated_answer": stated},
    )


def problem_to_json(problem: Problem) -> dict[str, Any]:
    """The rlr JSONL form of a Problem (read back by `read_problems`)."""
    return dataclasses.asdict(problem)


def parse_problem(obj: dict[str, Any], default_id: str) -> Problem:
    """One record in rlr's own Problem JSONL form (`problem_to_json`)."""
    answer = obj.get("answer")
    solution = obj.get("solution")
    meta = obj.get("meta", {})
    if answer is not None and not isinstance(answer, str):
        raise _Malformed("field 'answer' must be a string or null")
    if solution is not None and not isinstance(solution, str):
        raise _Malformed("field 'solution' must be a string or null")
    if not isinstance(meta, dict):
        raise _Malformed("field 'meta' must be an object")
    return Problem(
        id=str(obj.get("id", default_id)),
        question=_field(obj, "question"),
        answer=answer,
        solution=solution,
        source=str(obj.get("source", "")),
        meta=meta,
    )


def step_labelled_to_json(record: StepLabelled) -> dict[str, Any]:
    """The rlr JSONL form of a StepLabelled record (read back by `read_step_labelled`)."""
    out = dataclasses.asdict(record)
    out["steps"], out["labels"] = list(record.steps), list(record.labels)
    return out


def parse_step_labelled(obj: dict[str, Any], default_id: str) -> StepLabelled:
    """One record in rlr's own StepLabelled JSONL form (`step_labelled_to_json`)."""
    steps = _field(obj, "steps", list)
    labels = _field(obj, "labels", list)
    if not all(isinstance(s, str) for s in steps):
        raise _Malformed("field 'steps' must be a list of strings")
    if len(steps) != len(labels) or any(y not in (-1, 0, 1) for y in labels):
        raise _Malformed("field 'labels' must hold one of -1/0/+1 per step")
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise _Malformed("field 'meta' must be an object")
    gold = obj.get("gold_answer")
    return StepLabelled(
        id=str(obj.get("id", default_id)),
        question=_field(obj, "question"),
        steps=tuple(steps),
        labels=tuple(int(y) for y in labels),
        gold_answer=gold if isinstance(gold, str) else None,
        source=str(obj.get("source", "")),
        meta=meta,
    )


def read_gsm8k(path: str | os.PathLike, *, skip_malformed: bool = False) -> ReadResult[Problem]:
    """GSM8K JSONL (`question`, `answer` ending in `#### N`); see `parse_gsm8k`."""
    return read_jsonl(path, parse_gsm8k, skip_malformed=skip_malformed)


def read_math(path: str | os.PathLike, *, skip_malformed: bool = False) -> ReadResult[Problem]:
    """MATH or MATH500 JSONL; see `parse_math`."""
    return read_jsonl(path, parse_math, skip_malformed=skip_malformed)


def read_mathinstruct(
    path: str | os.PathLike, *, skip_malformed: bool = False
) -> ReadResult[Problem]:
    """MathInstruct JSONL (`instruction`, `output`); see `parse_mathinstruct`."""
    return read_jsonl(path, parse_mathinstruct, skip_malformed=skip_malformed)


def read_prm800k(
    path: str | os.PathLike, *, skip_malformed: bool = False
) -> ReadResult[StepLabelled]:
    """PRM800K phase-1/phase-2 JSONL; see `parse_prm800k`."""
    return read_jsonl(path, parse_prm800k, skip_malformed=skip_malformed)


def read_math_shepherd(
    path: str | os.PathLike, *, skip_malformed: bool = False
) -> ReadResult[StepLabelled]:
    """Math-Shepherd JSONL (`input` with "ки" step tags, `label` with +/-)."""
    return read_jsonl(path, parse_math_shepherd, skip_malformed=skip_malformed)


def read_problems(path: str | os.PathLike, *, skip_malformed: bool = False) -> ReadResult[Problem]:
    """rlr's own Problem JSONL (written by `write_jsonl` / `rlr make-data`)."""
    return read_jsonl(path, parse_problem, skip_malformed=skip_malformed)


def read_step_labelled(
    path: str | os.PathLike, *, skip_malformed: bool = False
) -> ReadResult[StepLabelled]:
    """rlr's own StepLabelled JSONL (written by `write_jsonl` / `rlr make-data`)."""
    return read_jsonl(path, parse_step_labelled, skip_malformed=skip_malformed)


READERS: dict[str, Callable[..., ReadResult[Any]]] = {
    "gsm8k": read_gsm8k,
    "math": read_math,
    "mathinstruct": read_mathinstruct,
    "prm800k": read_prm800k,
    "math_shepherd": read_math_shepherd,
    "problems": read_problems,
    "step_labelled": read_step_labelled,
}


def write_jsonl(path: str | os.PathLike, records: list[Problem] | list[StepLabelled]) -> int:
    """Write Problem or StepLabelled records as rlr JSONL; returns the number written."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            if isinstance(record, StepLabelled):
                obj = step_labelled_to_json(record)
            elif isinstance(record, Problem):
                obj = problem_to_json(record)
            else:
                raise ValueError(
                    f"write_jsonl: records must be Problem or StepLabelled, got {record!r}"
                )
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return len(records)
