"""`rlr prepare-prm-data`: PRM800K and Math-Shepherd JSONL -> rlr's StepLabelled JSONL."""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from rlr import cli
from rlr.data.prepare import prepare_prm_data
from rlr.data.readers import MalformedRecordError, read_step_labelled
from rlr.training.loading import load_labelled


def _completion(text: str, rating: int | None) -> dict:
    return {"text": text, "rating": rating, "flagged": False}


def _prm800k_step(completions: list[dict], chosen: int | None = 0, human: dict | None = None):
    return {"completions": completions, "human_completion": human, "chosen_completion": chosen}


# The shapes of tests/fixtures/data/prm800k.jsonl: a rated, chosen trajectory (ratings
# 1, 0, -1) and one where the labeller wrote the second step (a human completion, unrated).
PRM800K = [
    {
        "labeler": "a",
        "generation": 1,
        "question": {"problem": "What is $2 \\cdot 3 + 1$?", "ground_truth_answer": "7"},
        "label": {
            "steps": [
                _prm800k_step(
                    [_completion("First, $2 \\cdot 3 = 6$.", 1), _completion("It is 5.", -1)]
                ),
                _prm800k_step([_completion("Let me double-check that.", 0)]),
                _prm800k_step([_completion("# Answer\n\n8", -1)]),
            ],
            "finish_reason": "found_error",
        },
    },
    {
        "labeler": "b",
        "generation": 2,
        "question": {"problem": "Solve $x + 2 = 5$.", "ground_truth_answer": "3"},
        "label": {
            "steps": [
                _prm800k_step([_completion("Subtract 2 from both sides.", 1)]),
                _prm800k_step(
                    [_completion("So $x = 4$.", -1)],
                    chosen=None,
                    human={"text": "So $x = 3$.", "rating": None},
                ),
            ],
            "finish_reason": "solution",
        },
    },
]

QUESTION = "Janet has 16 eggs and eats 3. How many are left?"
MATH_SHEPHERD = [
    {
        "input": f"{QUESTION} Step 1: Janet starts with 16 eggs. ки\n"
        "Step 2: She has 16 - 3 = 13 eggs left. ки\nStep 3: The answer is: 13 ки",
        "label": f"{QUESTION} Step 1: Janet starts with 16 eggs. +\n"
        "Step 2: She has 16 - 3 = 13 eggs left. +\nStep 3: The answer is: 13 +",
        "task": "GSM8K",
    },
    {
        "input": f"{QUESTION} Step 1: She has 16 - 3 = 12 eggs left. ки\n"
        "Step 2: The answer is: 12 ки",
        "label": f"{QUESTION} Step 1: She has 16 - 3 = 12 eggs left. +\n"
        "Step 2: The answer is: 12 -",
        "task": "GSM8K",
    },
]


def _write(path: pathlib.Path, records: list, extra_lines: dict[int, str] | None = None):
    """Write records one a line; `extra_lines` puts raw text at given 0-based positions."""
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    for position, text in sorted((extra_lines or {}).items()):
        lines.insert(position, text)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_prm800k_ratings_become_labels_and_load_for_train_prm(tmp_path):
    source = _write(tmp_path / "prm800k.jsonl", PRM800K)
    out = tmp_path / "out" / "prm.jsonl"
    summary = prepare_prm_data(source, out, "prm800k")
    assert summary == {
        "format": "prm800k",
        "input": str(source),
        "out": str(out),
        "records": 2,
        "steps": 5,
        "labels": {"correct": 3, "neutral": 1, "wrong": 1},
        "skipped": 0,
    }
    records = load_labelled(str(out), "rlr")
    first, second = records
    assert first.labels == (1, 0, -1)  # ratings kept: +1 correct, 0 neutral, -1 wrong
    assert first.steps == ("First, $2 \\cdot 3 = 6$.", "Let me double-check that.", "# Answer\n\n8")
    assert first.gold_answer == "7" and first.source == "prm800k"
    assert second.steps == ("Subtract 2 from both sides.", "So $x = 3$.")
    assert second.labels == (1, 1)  # an unrated human completion counts as correct
    assert records == load_labelled(str(source), "prm800k")  # same as reading the source


def test_math_shepherd_tags_become_labels(tmp_path):
    source = _write(tmp_path / "shepherd.jsonl", MATH_SHEPHERD)
    out = tmp_path / "shepherd_rlr.jsonl"
    summary = prepare_prm_data(source, out, "math-shepherd")
    assert summary["records"] == 2 and summary["steps"] == 5
    assert summary["labels"] == {"correct": 4, "neutral": 0, "wrong": 1}
    first, second = load_labelled(str(out), "rlr")
    assert first.question == QUESTION
    assert first.steps[1] == "She has 16 - 3 = 13 eggs left."
    assert first.labels == (1, 1, 1) and second.labels == (1, -1)
    assert second.source == "math_shepherd" and second.meta["stated_answer"] == "12"
    assert list(read_step_labelled(out)) == load_labelled(str(source), "math_shepherd")


def test_format_name_with_underscore_is_accepted(tmp_path):
    source = _write(tmp_path / "shepherd.jsonl", MATH_SHEPHERD)
    assert prepare_prm_data(source, tmp_path / "o.jsonl", "math_shepherd")["records"] == 2


def test_cli_prints_a_one_line_json_summary(tmp_path, capsys):
    source = _write(tmp_path / "prm800k.jsonl", PRM800K)
    out = tmp_path / "prm.jsonl"
    argv = ["prepare-prm-data", "--format", "prm800k", "--input", str(source), "--out", str(out)]
    assert cli.run(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1
    summary = json.loads(printed)
    assert summary["records"] == 2 and summary["out"] == str(out)
    assert summary["labels"] == {"correct": 3, "neutral": 1, "wrong": 1}
    assert len(load_labelled(str(out), "rlr")) == 2


def test_malformed_line_names_file_and_line(tmp_path, capsys):
    bad = json.dumps({"input": "q Step 1: a ки", "label": "q Step 1: a ?"})
    source = _write(tmp_path / "shepherd.jsonl", MATH_SHEPHERD, {1: "", 2: bad})
    out = tmp_path / "o.jsonl"
    with pytest.raises(MalformedRecordError, match=r"shepherd\.jsonl:3: .*'\+' or '-'"):
        prepare_prm_data(source, out, "math-shepherd")
    assert not out.exists()
    argv = ["prepare-prm-data", "--format", "math-shepherd", "--input", str(source)]
    assert cli.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert re.match(r"rlr prepare-prm-data: error: .*shepherd\.jsonl:3: ", err)
    assert "--skip-malformed" in err and "skip_malformed=True" not in err
    assert not out.exists()


def test_skip_malformed_counts_skipped_lines(tmp_path, capsys):
    source = _write(tmp_path / "prm800k.jsonl", PRM800K, {0: "{not json", 2: "[1, 2]"})
    out = tmp_path / "o.jsonl"
    argv = ["prepare-prm-data", "--format", "prm800k", "--input", str(source), "--out", str(out)]
    assert cli.run([*argv, "--skip-malformed"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped"] == 2 and summary["records"] == 2
    assert len(load_labelled(str(out), "rlr")) == 2


def test_errors_for_missing_input_empty_input_and_overwriting(tmp_path):
    with pytest.raises(ValueError, match="is not a file"):
        prepare_prm_data(tmp_path / "nope.jsonl", tmp_path / "o.jsonl", "prm800k")
    empty = _write(tmp_path / "empty.jsonl", [], {0: "{not json"})
    with pytest.raises(ValueError, match=r"holds no prm800k records \(1 malformed"):
        prepare_prm_data(empty, tmp_path / "o.jsonl", "prm800k", skip_malformed=True)
    source = _write(tmp_path / "prm800k.jsonl", PRM800K)
    with pytest.raises(ValueError, match="is the input file"):
        prepare_prm_data(source, source, "prm800k")
    with pytest.raises(ValueError, match="format must be one of prm800k, math-shepherd"):
        prepare_prm_data(source, tmp_path / "o.jsonl", "rlr")


def test_cli_rejects_an_unknown_format(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["prepare-prm-data", "--format", "gsm8k", "--input", "a", "--out", "b"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
