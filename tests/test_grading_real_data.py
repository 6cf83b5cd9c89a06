"""The grader on real GSM8K and MATH500 text (tests/data)."""

from __future__ import annotations

import json
import random

import pytest

from rlr.grading import Grader, extract_answer, is_equivalent, normalize_answer


def _read_jsonl(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="module")
def math500(real_data):
    return _read_jsonl(real_data / "math500_test.jsonl")


@pytest.fixture(scope="module")
def grader():
    with Grader(num_workers=2, timeout_s=10.0) as pool:
        yield pool


def test_math500_boxed_answers_equal_their_answer_field(math500):
    assert len(math500) == 500
    exceptions = []
    for row in math500:
        extracted = extract_answer(row["solution"])
        if not is_equivalent(extracted, row["answer"]):
            exceptions.append((row["unique_id"], extracted, row["answer"]))
    rate = 1 - len(exceptions) / len(math500)
    print(f"MATH500 boxed answer == answer field: {rate:.2%}")
    assert exceptions == []


def test_math500_answers_of_different_problems_differ(math500, grader):
    answers = [row["answer"] for row in math500]
    order = list(range(len(answers)))
    random.Random(0).shuffle(order)
    # Pairs whose answers normalise to the same string are genuinely equal ("3" and "3").
    pairs = [
        (answers[j], answers[i])
        for i, j in enumerate(order)
        if normalize_answer(answers[i]) != normalize_answer(answers[j])
    ]
    assert len(pairs) > 450
    verdicts = grader.grade([p for p, _ in pairs], [g for _, g in pairs])
    false_positives = [pair for pair, verdict in zip(pairs, verdicts) if verdict]
    print(f"MATH500 shuffled pairs: {len(false_positives)} false positives of {len(pairs)}")
    assert false_positives == []
    assert grader.num_timeouts == 0


def test_gsm8k_model_solutions_agree_with_labels(real_data):
    references = _read_jsonl(real_data / "gsm8k_test.jsonl")
    solutions = _read_jsonl(real_data / "gsm8k_model_solutions.jsonl")
    assert len(references) == len(solutions) == 1319
    predictions, golds, labels = [], [], []
    for reference, row in zip(references, solutions):
        gold = extract_answer(reference["answer"])
        assert gold is not None and gold == extract_answer(row["ground_truth"])
        for sample in row.values():
            if isinstance(sample, dict) and "is_correct" in sample:
                predictions.append(extract_answer(sample["solution"]))
                golds.append(gold)
                labels.append(bool(sample["is_correct"]))
    assert len(labels) == 4 * 1319
    # Plain numbers take the exact fast path, so in-process grading is safe and quick here.
    with Grader(num_workers=0) as local:
        verdicts = local.grade(predictions, golds)
    agreement = sum(v == label for v, label in zip(verdicts, labels)) / len(labels)
    print(f"GSM8K model solutions: grader agrees with is_correct on {agreement:.4%}")
    assert agreement >= 0.99


def test_gsm8k_reference_answers_extract(real_data):
    references = _read_jsonl(real_data / "gsm8k_test.jsonl")
    for reference in references:
        gold = extract_answer(reference["answer"])
        assert gold is not None and is_equivalent(gold, reference["answer"].split("####")[-1])
