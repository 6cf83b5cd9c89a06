"""`rlr prepare-prm-data`: public step-labelled data -> rlr's StepLabelled JSONL.

`rlr train-prm` reads rlr's own StepLabelled JSONL (`data.format: rlr`). This command reads a
PRM800K or Math-Shepherd file with its reader in `rlr.data.readers` and writes every record
with `write_jsonl`, so the output reads back with `read_step_labelled` unchanged.

Labels (StepLabelled keeps one of +1 / 0 / -1 per step):

- PRM800K: a step's human rating is kept as its label: +1 -> +1 (correct), 0 -> 0
  (neutral), -1 -> -1 (wrong). The labelled trajectory follows, at each step, the chosen
  completion, else the human-written completion (rating +1 when unrated), else the first
  completion (see `parse_prm800k`). `rlr train-prm` with `label_mode=hard` trains +1 toward
  1, -1 toward 0 and a neutral 0 toward `neutral_target` (default 1.0).
- Math-Shepherd: each "ки" step tag of `input` is "+" or "-" at the same place in `label`;
  "+" -> +1 (correct), "-" -> -1 (wrong). There are no neutral steps.

A malformed line raises `MalformedRecordError` naming FILE:LINE, unless `skip_malformed`
(the `--skip-malformed` flag) skips and counts it.
"""

from __future__ import annotations

import collections
import os
import pathlib
from collections.abc import Callable
from typing import Any

from rlr.data.readers import (
    ReadResult,
    read_math_shepherd,
    read_prm800k,
    write_jsonl,
)
from rlr.data.records import StepLabelled

FORMATS: dict[str, Callable[..., ReadResult[StepLabelled]]] = {
    "prm800k": read_prm800k,
    "math-shepherd": read_math_shepherd,
}
LABEL_NAMES = {1: "correct", 0: "neutral", -1: "wrong"}


def prepare_prm_data(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    fmt: str,
    *,
    skip_malformed: bool = False,
) -> dict[str, Any]:
    """Convert `input_path` (format `fmt`: "prm800k" or "math-shepherd") into rlr's
    StepLabelled JSONL at `output_path`; returns a JSON-serialisable summary.

    The summary holds the format, input and output paths, the records written, the steps in
    them, the count of each label (correct / neutral / wrong) and the malformed lines skipped
    (always 0 unless `skip_malformed`). Raises MalformedRecordError (FILE:LINE) for a
    malformed line, and ValueError for an unknown format, a missing input, an output that
    would overwrite the input, or an input with no record.
    """
    key = fmt.replace("_", "-")
    if key not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    source, target = pathlib.Path(input_path), pathlib.Path(output_path)
    if not source.is_file():
        raise ValueError(
            f"input {str(source)!r} is not a file; give a {key} JSONL file (one record a line)"
        )
    if target.exists() and target.resolve() == source.resolve():
        raise ValueError(
            f"output {str(target)!r} is the input file; write the converted data elsewhere"
        )
    result = FORMATS[key](source, skip_malformed=skip_malformed)
    if not result.records:
        skipped = f" ({result.num_skipped} malformed lines skipped)" if result.num_skipped else ""
        raise ValueError(f"{source} holds no {key} records{skipped}; nothing was written")
    written = write_jsonl(target, result.records)
    counts = collections.Counter(label for r in result.records for label in r.labels)
    return {
        "format": key,
        "input": str(source),
        "out": str(target),
        "records": written,
        "steps": sum(counts.values()),
        "labels": {name: counts.get(label, 0) for label, name in LABEL_NAMES.items()},
        "skipped": result.num_skipped,
    }
