"""Record types shared by every reader, builder and writer in rlr.data."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Problem:
    """A math question with its gold final answer.

    Attributes:
      id: identifier unique within its source (file stem + 1-based line, or the source's own id).
      question: the question text shown to the policy.
      answer: the gold final answer string; None only where the source has none to extract
        (e.g. a MathInstruct program-of-thought record).
      solution: a reference solution in the source's format, or None.
      source: the format or dataset the record came from ("gsm8k", "math", ...).
      meta: JSON-serialisable extras (level, subject, raw fields); lists, never tuples.
    """

    id: str
    question: str
    answer: str | None
    solution: str | None = None
    source: str = ""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class StepLabelled:
    """A solution split into steps with one process label per step (PRM training data).

    Attributes:
      id: identifier unique within its source.
      question: the question the solution answers.
      steps: the solution's steps, in order, as text.
      labels: one label per step: +1 good, 0 neutral (PRM800K only), -1 bad.
      gold_answer: the gold final answer when the source gives it, else None.
      source: the format the record came from ("prm800k", "math_shepherd", "synthetic").
      meta: JSON-serialisable extras; lists, never tuples.
    """

    id: str
    question: str
    steps: tuple[str, ...]
    labels: tuple[int, ...]
    gold_answer: str | None = None
    source: str = ""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if len(self.steps) != len(self.labels):
            raise ValueError(
                f"StepLabelled {self.id!r}: {len(self.steps)} steps but {len(self.labels)} labels;"
                " give exactly one label per step"
            )
        bad = [label for label in self.labels if label not in (-1, 0, 1)]
        if bad:
            raise ValueError(f"StepLabelled {self.id!r}: labels must be -1, 0 or +1; got {bad}")
