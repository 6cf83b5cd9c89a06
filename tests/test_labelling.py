"""Math-Shepherd Monte-Carlo step labels: exact labels with known completers, a tiny real policy
end to end (deterministic, fixed shapes), agreement with the synthetic task's exact labels, CLI."""

from __future__ import annotations

import json
import re

import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest
from toy_assets import shared_toy_assets

from rlr import cli
from rlr.data.prompts import build_prompt
from rlr.data.readers import read_step_labelled
from rlr.data.synthetic import corrupt_solution, generate_problems
from rlr.grading import Grader
from rlr.training import labelling
from rlr.training.generation import make_sampler
from rlr.training.loading import load_policy_dir

PROBLEMS = generate_problems(6, seed=3, min_operations=3, max_operations=3)
_COMPUTE = re.compile(r"has (\d+) [-+*] \d+ = (\d+) ")


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


class PerfectCompleter:
    """Continues a synthetic solution prefix with exact arithmetic from its last stated value.

    A prefix whose steps are right therefore always reaches the gold answer, and one with a
    wrong value never does (the generator keeps every wrong value off the gold path).
    """

    def __init__(self, problems):
        self.by_prompt = {build_prompt(p.question): p for p in problems}
        self.seen: list[str] = []

    def __call__(self, prompts):
        self.seen += list(prompts)
        out = []
        for prompt in prompts:
            head, _, prefix = prompt.partition("Answer:\n")
            problem = self.by_prompt[head + "Answer:\n"]
            done = _COMPUTE.findall(prefix)
            value = int(done[-1][1]) if done else problem.meta["values"][0]
            lines = []
            for op, b in problem.meta["ops"][len(done) :]:
                new = _apply(value, op, b)
                lines.append(f"{problem.meta['name']} has {value} {op} {b} = {new} x.")
                value = new
            out.append("\n".join([*lines, f"The answer is {value}."]))
        return out


class AlternatingCompleter:
    """Answers right at even positions of each call and wrong at odd ones: soft labels of 1/2."""

    def __init__(self, golds_by_prompt):
        self.golds_by_prompt = golds_by_prompt

    def __call__(self, prompts):
        return [
            f"The answer is {self._gold(p) if i % 2 == 0 else -1}." for i, p in enumerate(prompts)
        ]

    def _gold(self, prompt):
        return next(g for q, g in self.golds_by_prompt.items() if prompt.startswith(q))


@pytest.fixture(scope="module")
def grader():
    with Grader(num_workers=0) as g:
        yield g


def _prompts(problems):
    return [build_prompt(p.question) for p in problems]


# --------------------------------------------------------------- pure pieces


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    st.integers(1, 6).flatmap(
        lambda n: st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=1, max_size=7)
    )
)
def test_monte_carlo_labels_match_loop(rows):
    soft, hard = labelling.monte_carlo_labels(np.array(rows))
    for j, row in enumerate(rows):
        assert soft[j] == pytest.approx(sum(row) / len(row))
        assert hard[j] == (1 if any(row) else 0)
    assert soft.dtype == np.float32 and hard.dtype == np.int32


def test_monte_carlo_labels_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"\[J, N\]"):
        labelling.monte_carlo_labels(np.zeros(3, bool))


def test_label_agreement_hand_made():
    result = labelling.label_agreement(
        hard=[1, 1, -1, -1, 1], soft=[0.9, 0.5, 0.0, 0.25, 0.75], truth=[1, -1, -1, 1, 1]
    )
    assert result["num_steps"] == 5
    assert result["num_true_correct"] == 3 and result["num_true_wrong"] == 2
    assert result["hard_accuracy"] == pytest.approx(3 / 5)
    assert result["hard_precision"] == pytest.approx(2 / 3)
    assert result["hard_recall"] == pytest.approx(2 / 3)
    assert result["soft_mean_true_correct"] == pytest.approx((0.9 + 0.25 + 0.75) / 3)
    assert result["soft_mean_true_wrong"] == pytest.approx((0.5 + 0.0) / 2)
    # 0/1 labels mean the same as -1/+1.
    assert labelling.label_agreement([1, 0], [1.0, 0.0], [1, -1])["hard_accuracy"] == 1.0
    with pytest.raises(ValueError, match="equal-length"):
        labelling.label_agreement([1], [0.5, 0.5], [1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        labelling.label_agreement([1], [1.5], [1])


# ------------------------------------------------------- known completers


def test_perfect_completer_gives_exact_labels(grader):
    rng = np.random.default_rng(0)
    problems = PROBLEMS[:4]
    solutions = [
        [problems[0].solution],
        [corrupt_solution(problems[1], first_error_step=1, rng=rng)],
        [corrupt_solution(problems[2], first_error_step=2, rng=rng)],
        [corrupt_solution(problems[3], first_error_step=3, rng=rng), problems[3].solution],
    ]
    complete = PerfectCompleter(problems)
    result = labelling.label_solutions(
        problems, _prompts(problems), solutions, complete=complete, grader=grader, num_completions=3
    )
    by_id = {r.id: r for r in result.records}
    # 3 computation steps + the answer step; steps 1..3 are completed 3 times each.
    expected = {
        f"{problems[0].id}-s0": [1, 1, 1, 1],
        f"{problems[1].id}-s0": [-1, -1, -1, -1],
        f"{problems[2].id}-s0": [1, -1, -1, -1],
        f"{problems[3].id}-s0": [1, 1, -1, -1],
        f"{problems[3].id}-s1": [1, 1, 1, 1],
    }
    assert set(by_id) == set(expected)
    for record_id, labels in expected.items():
        record = by_id[record_id]
        assert list(record.labels) == labels, record_id
        assert record.meta["soft_labels"] == [1.0 if y > 0 else 0.0 for y in labels]
        assert record.meta["solution_correct"] == (labels[-1] > 0)
        assert len(record.steps) == 4 and record.source == "monte_carlo"
    assert result.num_completions == 5 * 3 * 3 and len(complete.seen) == 45
    # Every completion prompt is the question prompt + whole steps + their newline.
    first = complete.seen[0]
    assert first == _prompts(problems)[0] + problems[0].solution.split("\n")[0] + "\n"
    assert all(p.endswith("\n") for p in complete.seen)
    agreement = labelling.synthetic_agreement(result.records, problems)
    assert agreement["hard_accuracy"] == 1.0 and agreement["num_unmatched"] == 0
    assert agreement["soft_mean_true_correct"] == 1.0
    assert agreement["soft_mean_true_wrong"] == 0.0


def test_soft_label_is_fraction_correct(grader):
    problems = PROBLEMS[:2]
    prompts = _prompts(problems)
    complete = AlternatingCompleter(dict(zip(prompts, [p.answer for p in problems])))
    result = labelling.label_solutions(
        problems,
        prompts,
        [[p.solution] for p in problems],
        complete=complete,
        grader=grader,
        num_completions=4,
    )
    for record in result.records:
        # Steps 1..3: 2 of 4 continuations right -> soft 0.5, hard +1; answer step: own grade.
        assert record.meta["soft_labels"] == [0.5, 0.5, 0.5, 1.0]
        assert list(record.labels) == [1, 1, 1, 1]


def test_truncation_and_empty_solutions(grader):
    problem = PROBLEMS[0]
    complete = PerfectCompleter([problem])
    result = labelling.label_solutions(
        [problem],
        _prompts([problem]),
        [[problem.solution, "  \n \n", "one step only, no answer"]],
        complete=complete,
        grader=grader,
        num_completions=2,
        max_steps=2,
    )
    assert result.skipped_empty == 1
    kept, single = result.records
    assert len(kept.steps) == 2 and kept.meta["truncated"] is True
    assert list(kept.labels) == [1, 1]  # both from completions, none from the own grade
    assert single.meta["truncated"] is False and list(single.labels) == [-1]
    assert len(complete.seen) == 2 * 2  # the single-step solution needs no completion


def test_label_solutions_errors(grader):
    with pytest.raises(ValueError, match="one entry per problem"):
        labelling.label_solutions(
            PROBLEMS[:2], ["q"], [[]], complete=lambda p: [], grader=grader, num_completions=1
        )
    with pytest.raises(ValueError, match="returned 0 texts"):
        labelling.label_solutions(
            PROBLEMS[:1],
            _prompts(PROBLEMS[:1]),
            [[PROBLEMS[0].solution]],
            complete=lambda p: [],
            grader=grader,
            num_completions=1,
        )


# ------------------------------------------------------ a tiny real policy


TINY = dict(num_hidden_layers=1, num_train=8, num_test=8, corpus_problems=40)


@pytest.fixture(scope="module")
def assets():
    return shared_toy_assets(**TINY)  # shared with the best-of-N tests


@pytest.fixture(scope="module")
def policy(assets):
    model, params, tokenizer = load_policy_dir(str(assets / "policy"))
    return make_sampler(model, tokenizer, max_new_tokens=12), params, tokenizer


def _label_with_policy(policy, grader, seed):
    sampler, params, tokenizer = policy
    problems = PROBLEMS[:3]
    prompts = _prompts(problems)
    complete = labelling.PolicyCompleter(
        sampler, params, tokenizer, batch_size=8, key=jax.random.key(seed)
    )
    # Given multi-step solutions make the prefix stage non-trivial whatever the random policy says.
    solutions = labelling.sample_solutions(complete, prompts, num_samples=2)
    solutions = [[p.solution, *s] for p, s in zip(problems, solutions)]
    return labelling.label_solutions(
        problems, prompts, solutions, complete=complete, grader=grader, num_completions=2
    )


def test_policy_labels_are_deterministic_and_well_formed(policy, grader):
    first = _label_with_policy(policy, grader, seed=0)
    again = _label_with_policy(policy, grader, seed=0)
    assert [r.meta for r in first.records] == [r.meta for r in again.records]
    assert [r.labels for r in first.records] == [r.labels for r in again.records]
    assert len(first.records) + first.skipped_empty == 9
    for record in first.records:
        soft = record.meta["soft_labels"]
        assert len(soft) == len(record.labels) == len(record.steps) >= 1
        assert set(record.labels) <= {-1, 1}
        assert all(0.0 <= s <= 1.0 for s in soft)
        # hard = any correct = soft > 0
        assert [y > 0 for y in record.labels] == [s > 0 for s in soft]
    gold = [r for r in first.records if r.meta["sample"] == 0]
    assert all(len(r.steps) == 4 for r in gold)
    # Given solutions: 3 problems x 3 prefixes x 2 completions at least.
    assert first.num_completions >= 18
    # Fixed batch size: one compilation per distinct prompt width, never one per call.
    assert policy[0].traces <= 3


# ----------------------------------------------------------------------- CLI


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["label-steps", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--policy", "--problems", "--completions", "--solutions-per-problem"):
        assert flag in out


def test_cli_missing_paths(assets, tmp_path, capsys):
    out = str(tmp_path / "labels.jsonl")
    with pytest.raises(ValueError, match="--problems .*nowhere.jsonl' is not a file"):
        cli.run(
            ["label-steps", "--policy", str(assets / "policy")]
            + ["--problems", str(tmp_path / "nowhere.jsonl"), "--out", out]
        )
    with pytest.raises(ValueError, match="--policy .*no_policy: no such directory"):
        cli.run(
            ["label-steps", "--policy", str(tmp_path / "no_policy")]
            + ["--problems", str(assets / "data" / "problems_test.jsonl"), "--out", out]
        )


def test_cli_writes_readable_step_labels(assets, tmp_path, capsys):
    out = tmp_path / "labels.jsonl"
    code = cli.main(
        ["label-steps", "--policy", str(assets / "policy")]
        + ["--problems", str(assets / "data" / "problems_test.jsonl"), "--out", str(out)]
        + ["--given-solutions", "--num-problems", "2", "--completions", "2"]
        + ["--max-new-tokens", "12", "--batch-size", "8", "--grader-workers", "0"]
    )
    assert code == 0
    records = read_step_labelled(out).records
    assert len(records) == 2
    assert all(r.meta["solution_correct"] for r in records)  # gold solutions
    assert all(r.labels[-1] == 1 for r in records)
    printed = capsys.readouterr().out
    summary = json.loads(printed[: printed.rindex("}") + 1])
    assert summary["solutions_labelled"] == 2
    assert "agreement_with_exact_labels" in summary  # synthetic problems
