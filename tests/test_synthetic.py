"""The synthetic arithmetic task: generation, exact step checking, corruption, fillers, data."""

from __future__ import annotations

import json
import re

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from rlr import cli
from rlr.data import read_problems, read_step_labelled
from rlr.data.synthetic import (
    FILLER_STEPS,
    check_steps,
    corrupt_solution,
    filler_step,
    final_answer,
    generate_problem,
    generate_problems,
    grade_steps,
    insert_fillers,
    make_datasets,
    misread_solution,
    misread_steps,
    process_labels,
)


def reference_answer(question: str) -> int:
    """Recompute the answer from the question text alone, one sentence at a time."""
    value = None
    for sentence in re.findall(r"[^.?]+[.?]", question):
        sentence = sentence.strip()
        number = re.search(r"\d+", sentence)
        n = int(number.group()) if number else None
        if value is None:
            value = n
        elif " times as many " in sentence:
            value *= n
        elif " more " in sentence:
            value += n
        elif re.search(r" (gives \d+|loses|sells) ", sentence):
            value -= n
        else:
            assert sentence.startswith("How many"), sentence
    return value


def reference_gold_lines(problem) -> list[str]:
    meta = problem.meta
    lines, value = [], meta["start"]
    for op, b in meta["ops"]:
        new = {"+": value + b, "-": value - b, "*": value * b}[op]
        lines.append(f"{meta['name']} has {value} {op} {b} = {new} {meta['object']}.")
        value = new
    return lines + [f"The answer is {value}."]


@pytest.fixture(scope="module")
def problems():
    return generate_problems(200, seed=3)


class TestGenerator:
    def test_deterministic_in_seed(self):
        assert generate_problems(20, seed=1) == generate_problems(20, seed=1)
        assert generate_problems(20, seed=1) != generate_problems(20, seed=2)

    def test_answers_follow_from_question_text(self, problems):
        for problem in problems:
            assert int(problem.answer) == reference_answer(problem.question)
            assert problem.solution.split("\n") == reference_gold_lines(problem)

    def test_default_knobs(self, problems):
        counts = {len(p.meta["ops"]) for p in problems}
        assert counts == {2, 3, 4}
        assert all(0 <= v < 100 for p in problems for v in p.meta["values"])
        assert {op for p in problems for op, _ in p.meta["ops"]} == {"+", "-", "*"}

    def test_knobs(self):
        problems = generate_problems(100, seed=0, min_operations=1, max_operations=1, max_digits=1)
        assert all(len(p.meta["ops"]) == 1 for p in problems)
        assert all(0 <= v < 10 for p in problems for v in p.meta["values"])
        only_plus = generate_problems(50, seed=0, operations=("+",), max_digits=3)
        assert {op for p in only_plus for op, _ in p.meta["ops"]} == {"+"}
        assert max(v for p in only_plus for v in p.meta["values"]) >= 100

    @pytest.mark.parametrize(
        "knobs, field",
        [
            (dict(min_operations=3, max_operations=2), "min_operations"),
            (dict(max_digits=0), "max_digits"),
            (dict(operations=("/",)), "operations"),
        ],
    )
    def test_bad_knobs(self, knobs, field):
        with pytest.raises(ValueError, match=field):
            generate_problems(1, seed=0, **knobs)


class TestCheckSteps:
    def test_gold_is_all_correct(self, problems):
        for problem in problems:
            assert check_steps(problem, problem.solution) == [True] * (len(problem.meta["ops"]) + 1)
            assert final_answer(problem.solution) == problem.answer

    def test_hand_written_errors(self, problems):
        problem = problems[0]
        name, obj = problem.meta["name"], problem.meta["object"]
        (op, b), a = problem.meta["ops"][0], problem.meta["values"][0]
        right = problem.meta["values"][1]
        gold = problem.solution.split("\n")

        def verdicts(first_line):
            return check_steps(problem, "\n".join([first_line] + gold[1:]))

        assert verdicts(f"{name} has {a} {op} {b} = {right} {obj}.")[0]
        assert not verdicts(f"{name} has {a} {op} {b} = {right + 1} {obj}.")[0]  # arithmetic
        wrong_b = b + 1
        wrong = {"+": a + wrong_b, "-": a - wrong_b, "*": a * wrong_b}[op]
        assert not verdicts(f"{name} has {a} {op} {wrong_b} = {wrong} {obj}.")[0]  # quantity
        assert not verdicts(f"Xavier has {a} {op} {b} = {right} {obj}.")[0]
        assert not verdicts(f"{name} has {a} {op} {b} = {right} bananas.")[0]
        assert not verdicts("I am not sure.")[0]
        extra = problem.solution.replace("\nThe answer", f"\n{gold[0]}\nThe answer")
        assert check_steps(problem, extra)[-2] is False  # more computations than the problem has

    @hypothesis.settings(max_examples=60, deadline=None)
    @hypothesis.given(seed=st.integers(0, 10_000), step=st.integers(1, 4))
    def test_corruption_is_wrong_from_its_first_error_on(self, seed, step):
        problem = generate_problems(1, seed=seed)[0]
        n = len(problem.meta["ops"])
        step = min(step, n)
        rng = np.random.default_rng(seed)
        text = corrupt_solution(problem, first_error_step=step, rng=rng)
        assert check_steps(problem, text) == [True] * (step - 1) + [False] * (n - step + 2)
        assert final_answer(text) != problem.answer
        lines = text.split("\n")
        for line in lines[:-1]:  # every stated computation is well-formed and non-negative
            assert re.fullmatch(r"[A-Z][a-z]+ has \d+ [-+*] \d+ = \d+ [a-z]+\.", line), line
        assert [v.kind for v in grade_steps(problem, text)] == ["compute"] * n + ["answer"]

    def test_corrupt_step_out_of_range(self, problems):
        with pytest.raises(ValueError, match="first_error_step"):
            corrupt_solution(problems[0], first_error_step=0, rng=np.random.default_rng(0))

    def test_fillers_are_correct_but_flagged(self, problems):
        rng = np.random.default_rng(0)
        assert {filler_step(rng) for _ in range(200)} == set(FILLER_STEPS)
        for problem in problems[:50]:
            text = insert_fillers(problem.solution, num_fillers=3, rng=rng)
            verdicts = grade_steps(problem, text)
            assert all(v.correct for v in verdicts)
            assert sum(v.filler for v in verdicts) == 3
            assert verdicts[-1].kind == "answer"  # fillers never follow the answer
            steps, labels = process_labels(problem, text)
            assert labels == [1] * len(steps)


class TestDatasets:
    def test_sft_slips_are_one_wrong_step_carried_to_a_wrong_answer(self):
        clean = make_datasets(num_train=400, num_test=20, seed=3, sft_filler_fraction=0.2)
        slipped = make_datasets(
            num_train=400, num_test=20, seed=3, sft_filler_fraction=0.2, sft_slip_fraction=0.25
        )
        problems = {p.id: p for p in slipped["problems_train"]}
        slips = [p for p in slipped["sft_train"] if p.meta["slip"]]
        assert 0.18 < len(slips) / len(slipped["sft_train"]) < 0.32
        for record in slips:
            problem = problems[record.id]
            verdicts = [v for v in grade_steps(problem, record.solution) if not v.filler]
            first_wrong = next(k for k, v in enumerate(verdicts, 1) if not v.correct)
            assert first_wrong == record.meta["slip"]  # the slip is where meta says it is
            assert final_answer(record.solution) != problem.answer
        for a, b in zip(clean["sft_train"], slipped["sft_train"]):
            if not b.meta["slip"]:  # a fraction of 0 leaves the other records as they were
                assert a.solution == b.solution and a.meta["fillers"] == b.meta["fillers"]
        with pytest.raises(ValueError, match="sft_slip_fraction"):
            make_datasets(num_train=1, num_test=1, sft_slip_fraction=-0.1)

    def test_misreadings_are_one_systematic_error_and_leave_other_records_alone(self):
        clean = make_datasets(num_train=400, num_test=50, seed=3, sft_slip_fraction=0.2)
        misread = make_datasets(
            num_train=400,
            num_test=50,
            seed=3,
            sft_slip_fraction=0.2,
            sft_misread_fraction=0.7,
            prm_misread_fraction=0.5,
        )
        problems = {p.id: p for p in misread["problems_train"]}
        readable = [p for p in misread["sft_train"] if misread_steps(problems[p.id])]
        hit = [p for p in readable if p.meta["misread"]]
        assert 0.2 < len(readable) / len(misread["sft_train"]) < 0.6
        assert 0.55 < len(hit) / len(readable) < 0.85
        for record in hit:
            problem = problems[record.id]
            assert record.meta["slip"] == 0
            verdicts = [v for v in grade_steps(problem, record.solution) if not v.filler]
            first_wrong = next(k for k, v in enumerate(verdicts, 1) if not v.correct)
            assert first_wrong == misread_steps(problem)[0]
            lines = [line for line in record.solution.split("\n") if " = " in line]
            assert " + " in lines[first_wrong - 1]  # a loss computed as a gain
            assert final_answer(record.solution) != problem.answer
        for a, b in zip(clean["sft_train"], misread["sft_train"]):
            if not b.meta["misread"]:
                assert a.solution == b.solution
        kinds = [r.meta["kind"] for r in misread["prm_train"]]
        assert kinds.count("misread") > 20
        for record in misread["prm_train"]:
            if record.meta["kind"] == "misread":
                assert -1 in record.labels and record.labels[-1] == -1
        assert all(not p.meta["misread"] for p in clean["sft_train"])
        with pytest.raises(ValueError, match="prm_misread_fraction"):
            make_datasets(num_train=1, num_test=1, prm_misread_fraction=1.5)

    def test_misread_steps_follow_the_phrasing(self):
        rng = np.random.default_rng(0)
        seen = 0
        for i in range(200):
            problem = generate_problem(rng, index=i, max_digits=1, operations=("+", "-"))
            sentences = problem.question.split(". ")[1 : 1 + len(problem.meta["ops"])]
            expected = [
                k
                for k, s in enumerate(sentences, 1)
                if " gives " in s and s.split(" ")[0] == problem.meta["name"]
            ]
            assert misread_steps(problem) == expected
            seen += bool(expected)
            if not expected:
                assert misread_solution(problem) == problem.solution
        assert seen > 30

    def test_splits_and_labels(self):
        data = make_datasets(
            num_train=300,
            num_test=50,
            seed=5,
            sft_filler_fraction=1.0,
            prm_corrupt_fraction=0.5,
            prm_filler_fraction=0.5,
        )
        test_questions = {p.question for p in data["problems_test"]}
        assert not test_questions & {p.question for p in data["problems_train"]}
        assert len(data["problems_test"]) == 50
        assert all(p.meta["fillers"] == 1 for p in data["sft_train"])
        problems = {p.id: p for p in data["problems_train"]}
        kinds = {"correct": 0, "corrupted": 0}
        for record in data["prm_train"]:
            problem = problems[record.id]
            text = "\n".join(record.steps)
            assert list(record.labels) == process_labels(problem, text)[1]
            kinds[record.meta["kind"]] += 1
            if record.meta["kind"] == "correct":
                assert set(record.labels) == {1}
            else:
                assert record.labels[-1] == -1
            assert sum(s in FILLER_STEPS for s in record.steps) == record.meta["fillers"]
        assert 100 < kinds["corrupted"] < 200

    def test_filler_aware_labels_mark_only_fillers_and_keep_everything_else(self):
        knobs = dict(num_train=200, num_test=20, seed=3, prm_filler_fraction=0.8)
        plain = make_datasets(**knobs)
        aware = make_datasets(**knobs, prm_filler_labels="no_progress")
        assert aware["problems_test"] == plain["problems_test"]
        changed = 0
        for before, after in zip(plain["prm_train"], aware["prm_train"]):
            assert before.steps == after.steps
            for step, old, new in zip(before.steps, before.labels, after.labels):
                if step in FILLER_STEPS:
                    assert new == -1
                    changed += old != new
                else:
                    assert new == old  # a filler never ends the correct prefix
        assert changed > 50
        # One filler in a correct solution: the steps after it stay correct.
        problem = plain["problems_train"][0]
        text = insert_fillers(problem.solution, num_fillers=1, rng=np.random.default_rng(1))
        steps, labels = process_labels(problem, text, filler_labels="no_progress")
        assert labels.count(-1) == 1 and labels[-1] == 1
        assert steps[labels.index(-1)] in FILLER_STEPS
        with pytest.raises(ValueError, match="filler_labels must be one of"):
            process_labels(problem, text, filler_labels="zero")

    def test_bad_fraction(self):
        with pytest.raises(ValueError, match="sft_filler_fraction"):
            make_datasets(num_train=1, num_test=1, sft_filler_fraction=1.5)

    def test_make_data_cli_writes_readable_files(self, tmp_path):
        out = tmp_path / "synthetic"
        argv = ["make-data", "--out", str(out), "--num-train", "40", "--num-test", "10"]
        assert cli.main(argv + ["--seed", "2", "--operations", "+-"]) == 0
        train = read_problems(out / "problems_train.jsonl")
        assert len(train) == 40 and train.num_skipped == 0
        assert {op for p in train for op, _ in p.meta["ops"]} <= {"+", "-"}
        assert len(read_problems(out / "sft_train.jsonl")) == 40
        assert len(read_step_labelled(out / "prm_test.jsonl")) == 10
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["counts"]["problems_test"] == 10
        assert manifest["knobs"]["operations"] == ["+", "-"]
