"""Best-of-N: selection rules against NumPy loop references (ties included), answer keys, the
sample-grade-score driver on a tiny random policy / PRM / ORM, and `rlr eval-bon`."""

from __future__ import annotations

import functools
import json

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest
from test_labelling import TINY
from toy_assets import shared_toy_assets

from rlr import cli, readouts
from rlr.data.prompts import build_prompt
from rlr.data.segmentation import step_ends_from_ids
from rlr.training import bon, loading
from rlr.training.generation import make_sampler
from rlr.training.schemas import ModelSpec

# ------------------------------------------------------------- references


def ref_aggregate(scores, mask, method):
    out = []
    for row, valid in zip(scores, mask):
        real = [s for s, v in zip(row, valid) if v > 0]
        if not real:
            out.append(0.0)
        elif method == "min":
            out.append(min(real))
        elif method == "last":
            out.append(real[-1])
        else:
            out.append(float(np.prod(real)))
    return np.array(out)


def ref_best(scores, correct, n):
    out = []
    for row, right in zip(scores, correct):
        best = max(row[:n])
        tied = [g for g in range(n) if row[g] == best]
        out.append(sum(right[g] for g in tied) / len(tied))
    return np.array(out)


def ref_majority(keys, correct, n):
    out = []
    for row, right in zip(keys, correct):
        groups: dict = {}
        for g in range(n):
            if row[g] is not None:
                groups.setdefault(row[g], []).append(right[g])
        if not groups:
            out.append(0.0)
            continue
        top = max(len(v) for v in groups.values())
        tied = [np.mean(v) for v in groups.values() if len(v) == top]
        out.append(float(np.mean(tied)))
    return np.array(out)


def random_table(seed, B=9, G=8, K=5):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(B, G)).astype(np.float32) / 4  # many ties
    correct = (rng.random((B, G)) < 0.4).astype(np.float32)
    steps = rng.integers(0, K + 1, size=B)
    mask = (np.arange(K)[None, :] < steps[:, None]).astype(np.float32)
    step_scores = rng.random((B, K)).astype(np.float32) * mask
    keys = [
        [None if rng.random() < 0.2 else str(rng.integers(0, 3)) for _ in range(G)]
        for _ in range(B)
    ]
    return scores, correct, step_scores, mask, keys


class SelectionTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_aggregations_match_loop(self):
        _, _, step_scores, mask, _ = random_table(0)
        assert mask[:, 0].min() == 0  # a row without steps is covered
        for method in bon.AGGREGATIONS:
            fn = self.variant(functools.partial(bon.aggregate_step_scores, method=method))
            np.testing.assert_allclose(
                fn(step_scores, mask), ref_aggregate(step_scores, mask, method), rtol=1e-6
            )

    @chex.variants(with_jit=True, without_jit=True)
    def test_best_of_n_matches_loop_with_ties(self):
        scores, correct, *_ = random_table(1)
        for n in (1, 3, 8):
            fn = self.variant(functools.partial(bon.best_of_n_accuracy, n=n))
            np.testing.assert_allclose(fn(scores, correct), ref_best(scores, correct, n), atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_majority_matches_loop_with_ties_and_missing_answers(self):
        _, correct, _, _, keys = random_table(2)
        ids = bon.answer_classes(keys)
        for n in (1, 2, 5, 8):
            fn = self.variant(functools.partial(bon.majority_vote_accuracy, n=n))
            np.testing.assert_allclose(fn(ids, correct), ref_majority(keys, correct, n), atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_pass_and_mean(self):
        _, correct, *_ = random_table(3)
        for n in (1, 4, 8):
            got_pass = self.variant(functools.partial(bon.pass_at_n, n=n))(correct)
            got_mean = self.variant(functools.partial(bon.mean_accuracy, n=n))(correct)
            np.testing.assert_array_equal(got_pass, [float(any(r[:n])) for r in correct])
            np.testing.assert_allclose(got_mean, [np.mean(r[:n]) for r in correct], atol=1e-6)


def test_hand_made_selections():
    scores = np.array([[0.2, 0.9, 0.9, 0.1], [0.5, 0.4, 0.3, 0.6]], np.float32)
    correct = np.array([[1, 1, 0, 0], [0, 1, 1, 1]], np.float32)
    # Row 0: samples 1 and 2 tie at 0.9, one right -> 0.5; row 1 at n=3: sample 0 (wrong).
    np.testing.assert_allclose(bon.best_of_n_accuracy(scores, correct, n=3), [0.5, 0.0])
    np.testing.assert_allclose(bon.best_of_n_accuracy(scores, correct, n=4), [0.5, 1.0])
    steps = np.array([[0.9, 0.2, 0.8], [0.5, 0.6, 0.0]], np.float32)
    mask = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
    np.testing.assert_allclose(bon.aggregate_step_scores(steps, mask, method="min"), [0.2, 0.5])
    np.testing.assert_allclose(bon.aggregate_step_scores(steps, mask, method="last"), [0.8, 0.6])
    np.testing.assert_allclose(
        bon.aggregate_step_scores(steps, mask, method="prod"), [0.144, 0.3], rtol=1e-6
    )
    keys = [["5", "7", "5.0", None], ["1", "2", None, None]]
    ids = bon.answer_classes(
        [[bon.answer_key(f"The answer is {k}.") if k else None for k in r] for r in keys]
    )
    np.testing.assert_array_equal(ids, [[0, 1, 0, -1], [0, 1, -1, -1]])
    right = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], np.float32)
    # Row 0: "5" twice beats "7"; row 1: "1" and "2" tie, one right -> 0.5.
    np.testing.assert_allclose(bon.majority_vote_accuracy(ids, right, n=4), [1.0, 0.5])
    no_answers = np.full((1, 3), -1, np.int32)
    np.testing.assert_allclose(bon.majority_vote_accuracy(no_answers, np.ones((1, 3)), n=3), [0.0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="min, last, prod"):
        bon.aggregate_step_scores(np.zeros((1, 2)), np.ones((1, 2)), method="mean")
    with pytest.raises(ValueError, match=r"n must be in 1\.\.4"):
        bon.best_of_n_accuracy(np.zeros((2, 4)), np.zeros((2, 4)), n=5)
    with pytest.raises(ValueError, match="non-empty"):
        bon.answer_classes([])


def test_answer_keys():
    assert bon.answer_key("The answer is 5.") == bon.answer_key("so \\boxed{5.0}")
    assert bon.answer_key("The answer is 1/2.") == bon.answer_key("The answer is 0.5.")
    assert bon.answer_key("The answer is 5.") != bon.answer_key("The answer is 6.")
    assert bon.answer_key("no answer here") is None
    assert bon.answer_key("\\boxed{x+1}") == "x+1"


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(st.integers(1, 40))
def test_default_ns(G):
    ns = bon.default_ns(G)
    assert ns[0] == 1 and ns[-1] == G and ns == sorted(set(ns))
    assert all(n & (n - 1) == 0 for n in ns[:-1])


def test_table_orders_methods():
    scores, correct, _, _, keys = random_table(4, B=6, G=4, K=3)
    rng = np.random.default_rng(4)
    step_scores = rng.random((6, 4, 3)).astype(np.float32)
    step_mask = np.ones((6, 4, 3), np.float32)
    table = bon.best_of_n_table(
        correct,
        bon.answer_classes(keys),
        ns=[1, 2, 4],
        prm_step_scores=step_scores,
        step_mask=step_mask,
        orm_scores=scores,
    )
    assert list(table) == ["prm_min", "prm_last", "prm_prod", "orm", "majority", "pass", "mean"]
    for name, values in table.items():
        assert all(v <= p + 1e-6 for v, p in zip(values, table["pass"])), name
    np.testing.assert_allclose(
        table["orm"], [ref_best(scores, correct, n).mean() for n in (1, 2, 4)]
    )
    prod = step_scores.prod(axis=2)
    np.testing.assert_allclose(table["prm_prod"][2], ref_best(prod, correct, 4).mean(), atol=1e-6)
    assert np.all(np.diff(table["pass"]) >= 0)


# ----------------------------------------------------- tiny real networks


class LengthGrader:
    """Grades a response right when its length is even: varied, known verdicts."""

    def grade_responses(self, texts, golds):
        assert len(texts) == len(golds)
        return [len(t) % 2 == 0 for t in texts]


@pytest.fixture(scope="module")
def assets():
    return shared_toy_assets(**TINY)  # shared with the labelling tests


@pytest.fixture(scope="module")
def scored(assets):
    model, params, tokenizer = loading.load_policy_dir(str(assets / "policy"))
    prm = loading.load_scorer(ModelSpec(path=str(assets / "prm")))
    orm = loading.load_scorer(ModelSpec(path=str(assets / "orm")), what="orm")
    problems = loading.load_problems(str(assets / "data" / "problems_test.jsonl"), limit=3)
    sampler = make_sampler(model, tokenizer, max_new_tokens=12)
    samples = bon.sample_and_score(
        sampler,
        params,
        tokenizer,
        [build_prompt(p.question) for p in problems],
        [p.answer for p in problems],
        grader=LengthGrader(),
        key=jax.random.key(0),
        samples_per_problem=4,
        batch_size=8,
        prm=prm,
        orm=orm,
        max_steps=6,
    )
    return samples, prm, orm, tokenizer


def test_scores_are_what_ppo_reads(scored):
    samples, prm, orm, tokenizer = scored
    B, G, S = samples.input_ids.shape
    T = samples.response_mask.shape[2]
    assert (B, G, T) == (3, 4, 12) and samples.step_scores.shape == (3, 4, 6)
    ids = samples.input_ids.reshape(B * G, S)
    attn = samples.attention_mask.reshape(B * G, S)
    response = samples.response_mask.reshape(B * G, T)
    step_end, step_mask, texts = step_ends_from_ids(
        ids[:, S - T :], response, tokenizer, max_steps=6
    )
    assert texts == samples.texts
    # One call over all 12 rows, no chunking or padding: the batched scores must match.
    prm_fn = jax.jit(functools.partial(readouts.prm_step_scores, prm[0], T=T))
    orm_fn = jax.jit(functools.partial(readouts.orm_scores, orm[0]))
    direct_prm = prm_fn(prm[1], ids, attn, step_end, step_mask)
    direct_orm = orm_fn(orm[1], ids, attn, response.astype(np.float32))
    np.testing.assert_allclose(samples.step_scores.reshape(B * G, 6), direct_prm, atol=1e-5)
    np.testing.assert_allclose(samples.orm_scores.reshape(B * G), direct_orm, atol=1e-5)
    np.testing.assert_array_equal(samples.step_mask.reshape(B * G, 6), step_mask)
    expected = [len(t) % 2 == 0 for t in samples.texts]
    np.testing.assert_array_equal(samples.correct.reshape(-1), expected)


def test_summary_matches_references(scored):
    samples = scored[0]
    result = bon.summarize(samples)
    assert result["n"] == [1, 2, 4] and result["num_problems"] == 3
    acc = result["accuracy"]
    for how in bon.AGGREGATIONS:
        agg = ref_aggregate(
            samples.step_scores.reshape(12, 6), samples.step_mask.reshape(12, 6), how
        ).reshape(3, 4)
        want = [ref_best(agg, samples.correct, n).mean() for n in (1, 2, 4)]
        np.testing.assert_allclose(acc[f"prm_{how}"], want, atol=1e-6)
    np.testing.assert_allclose(
        acc["pass"], [samples.correct[:, :n].max(1).mean() for n in (1, 2, 4)]
    )
    assert acc["mean"][0] == acc["prm_min"][0] == acc["orm"][0] == samples.correct[:, 0].mean()
    json.dumps(result)  # JSON-able


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval-bon", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--policy", "--prm", "--orm", "--problems", "--n", "--out"):
        assert flag in out


def test_cli_missing_paths(assets, tmp_path):
    common = ["--problems", str(assets / "data" / "problems_test.jsonl")]
    with pytest.raises(ValueError, match="--prm .*no_prm' does not exist"):
        cli.run(
            ["eval-bon", "--policy", str(assets / "policy"), "--prm", str(tmp_path / "no_prm")]
            + common
        )
    with pytest.raises(ValueError, match="--problems .*none.jsonl' is not a file"):
        cli.run(
            [
                "eval-bon",
                "--policy",
                str(assets / "policy"),
                "--problems",
                str(tmp_path / "none.jsonl"),
            ]
        )
    with pytest.raises(ValueError, match="not a reward model"):
        cli.run(
            ["eval-bon", "--policy", str(assets / "policy"), "--orm", str(assets / "policy")]
            + common
        )


def test_cli_writes_json_and_png(assets, tmp_path, capsys):
    out = tmp_path / "bon" / "result.json"
    code = cli.main(
        ["eval-bon", "--policy", str(assets / "policy"), "--prm", str(assets / "prm")]
        + ["--orm", str(assets / "orm"), "--problems", str(assets / "data" / "problems_test.jsonl")]
        + ["--n", "4", "--num-problems", "2", "--max-new-tokens", "12", "--batch-size", "8"]
        + ["--grader-workers", "0", "--out", str(out)]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["n"] == [1, 2, 4] and result["samples_per_problem"] == 4
    assert set(result["accuracy"]) == {
        "prm_min",
        "prm_last",
        "prm_prod",
        "orm",
        "majority",
        "pass",
        "mean",
    }
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "prm_min" in printed and "N=4" in printed
