"""Best-of-N evaluation of PRM and ORM reranking: `rlr eval-bon`.

For each held-out problem the policy samples G solutions once; every method then picks one of
the first n samples, for each n in a list (1, 2, 4, ... G), and its accuracy is reported:

- prm_min / prm_last / prm_prod: the sample whose PRM step scores, aggregated by min, by the
  last step's score or by their product, are highest;
- orm: the sample with the highest ORM score;
- majority: the most frequent final answer (extract_answer, then normalised: plain numbers
  compare by value);
- pass: 1 when any of the n samples is right (pass@n, the ceiling of every reranker);
- mean: the mean single-sample accuracy of the n samples.

Ties are scored as a uniform random pick among the tied samples (or tied answers): the
accuracy credited is the mean correctness of the tied set, so no tie-break rule favours a
method. A solution without any step gets a PRM score of 0. Solutions are sampled, cut, graded
and scored by rlr.training.pipeline, with the PRM and ORM readouts of PPO's rewards
(rlr.readouts.reward_model_scores), so the scores are exactly what PPO sees.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rlr.data.segmentation import DEFAULT_SEPARATORS
from rlr.models.step_scorers import StepScorer
from rlr.training.pipeline import sample_and_judge, score_judged

AGGREGATIONS = ("min", "last", "prod")


def aggregate_step_scores(
    step_scores: chex.Array,  # [B, K] PRM probability of each step prefix
    step_mask: chex.Array,  # [B, K] 1 for real steps; real steps form a prefix of each row
    *,
    method: str,
) -> chex.Array:  # [B]
    """One PRM score per solution: min, last or product of its step scores; 0 with no steps."""
    chex.assert_rank([step_scores, step_mask], 2)
    chex.assert_equal_shape([step_scores, step_mask])
    if method not in AGGREGATIONS:
        raise ValueError(f"method must be one of {', '.join(AGGREGATIONS)}; got {method!r}")
    real = step_mask > 0
    num_steps = jnp.sum(real, axis=1)
    if method == "min":
        score = jnp.min(jnp.where(real, step_scores, jnp.inf), axis=1)
    elif method == "prod":
        score = jnp.prod(jnp.where(real, step_scores, 1.0), axis=1)
    else:
        last = jnp.maximum(num_steps - 1, 0)
        score = jnp.take_along_axis(step_scores, last[:, None], axis=1)[:, 0]
    return jnp.where(num_steps > 0, score, 0.0)


def best_of_n_accuracy(
    scores: chex.Array,  # [B, G] reranker score of each sample
    correct: chex.Array,  # [B, G] 1 where the sample is right
    *,
    n: int,
) -> chex.Array:  # [B] in [0, 1]
    """Correctness of the highest-scoring of the first n samples; ties: mean over the tied."""
    chex.assert_rank([scores, correct], 2)
    chex.assert_equal_shape([scores, correct])
    _check_n(n, scores.shape[1])
    scores, correct = scores[:, :n], correct[:, :n].astype(jnp.float32)
    tied = (scores == jnp.max(scores, axis=1, keepdims=True)).astype(jnp.float32)
    return jnp.sum(tied * correct, axis=1) / jnp.sum(tied, axis=1)


def majority_vote_accuracy(
    answer_ids: chex.Array,  # [B, G] int: equal ids in a row = equal answers; -1 = no answer
    correct: chex.Array,  # [B, G] 1 where the sample is right
    *,
    n: int,
) -> chex.Array:  # [B] in [0, 1]
    """Correctness of the most frequent answer among the first n samples.

    Ids are row-local labels in [0, G) (`answer_classes`). Samples without an answer do not
    vote; a row where none has one scores 0. Tied answers: mean of their correctness, each
    answer's correctness being the mean over its samples.
    """
    chex.assert_rank([answer_ids, correct], 2)
    chex.assert_equal_shape([answer_ids, correct])
    G = answer_ids.shape[1]
    _check_n(n, G)
    ids, correct = answer_ids[:, :n], correct[:, :n].astype(jnp.float32)
    votes = (ids[:, :, None] == jnp.arange(G)[None, None, :]).astype(jnp.float32)  # [B, n, G]
    counts = jnp.sum(votes, axis=1)  # [B, G]
    answer_correct = jnp.sum(votes * correct[:, :, None], axis=1) / jnp.maximum(counts, 1.0)
    top = jnp.max(counts, axis=1, keepdims=True)
    tied = ((counts == top) & (top > 0)).astype(jnp.float32)
    return jnp.sum(tied * answer_correct, axis=1) / jnp.maximum(jnp.sum(tied, axis=1), 1.0)


def pass_at_n(correct: chex.Array, *, n: int) -> chex.Array:  # [B, G] -> [B]
    """1 where any of the first n samples is right."""
    chex.assert_rank(correct, 2)
    _check_n(n, correct.shape[1])
    return jnp.max(correct[:, :n].astype(jnp.float32), axis=1)


def mean_accuracy(correct: chex.Array, *, n: int) -> chex.Array:  # [B, G] -> [B]
    """Mean correctness of the first n samples: the single-sample accuracy."""
    chex.assert_rank(correct, 2)
    _check_n(n, correct.shape[1])
    return jnp.mean(correct[:, :n].astype(jnp.float32), axis=1)


def _check_n(n: int, G: int) -> None:
    if not 1 <= n <= G:
        raise ValueError(f"n must be in 1..{G} (samples per problem); got {n}")


def answer_key(response: str) -> str | None:
    """The comparable form of a response's final answer: extract_answer, normalize_answer, and
    for plain numbers their exact value ("5", "5.0", "10/2" share a key); None when no answer."""
    from rlr.grading import extract_answer, normalize_answer
    from rlr.grading.normalize import plain_number

    answer = extract_answer(response)
    if answer is None:
        return None
    normal = normalize_answer(answer)
    if not normal:
        return None
    value = plain_number(normal)
    return f"number:{value}" if value is not None else normal


def answer_classes(keys: Sequence[Sequence[str | None]]) -> np.ndarray:  # [B, G] int32
    """Row-local answer ids for `majority_vote_accuracy`: ids by first appearance, -1 for None."""
    rows = [list(row) for row in keys]
    if not rows or len({len(row) for row in rows}) != 1:
        raise ValueError("answer_classes needs a non-empty [B, G] table of answer keys")
    out = np.full((len(rows), len(rows[0])), -1, np.int32)
    for b, row in enumerate(rows):
        seen: dict[str, int] = {}
        for g, key in enumerate(row):
            if key is not None:
                out[b, g] = seen.setdefault(key, len(seen))
    return out


def default_ns(G: int) -> list[int]:
    """1, 2, 4, ... up to G, and G itself."""
    ns = [1 << i for i in range(G.bit_length()) if 1 << i <= G]
    return ns if ns[-1] == G else [*ns, G]


def best_of_n_table(
    correct: chex.Array,  # [B, G]
    answer_ids: chex.Array,  # [B, G]
    *,
    ns: Sequence[int],
    prm_step_scores: chex.Array | None = None,  # [B, G, K]
    step_mask: chex.Array | None = None,  # [B, G, K]
    orm_scores: chex.Array | None = None,  # [B, G]
) -> dict[str, list[float]]:
    """Accuracy (mean over the B problems) of every method at every n in `ns`."""
    correct = jnp.asarray(correct, jnp.float32)
    methods: dict[str, Any] = {}
    if prm_step_scores is not None:
        chex.assert_rank([prm_step_scores, step_mask], 3)
        B, G, K = prm_step_scores.shape
        for how in AGGREGATIONS:
            flat = _aggregate(
                jnp.reshape(prm_step_scores, (B * G, K)),
                jnp.reshape(step_mask, (B * G, K)),
                method=how,
            )
            methods[f"prm_{how}"] = functools.partial(_best, flat.reshape(B, G))
    if orm_scores is not None:
        methods["orm"] = functools.partial(_best, jnp.asarray(orm_scores))
    methods["majority"] = functools.partial(_majority, jnp.asarray(answer_ids))
    methods["pass"] = _pass
    methods["mean"] = _mean
    return {
        name: [float(jnp.mean(method(correct, n=n))) for n in ns]
        for name, method in methods.items()
    }


# One compiled program per (shape, n) instead of one dispatch per primitive.
_aggregate = jax.jit(aggregate_step_scores, static_argnames="method")
_best = jax.jit(best_of_n_accuracy, static_argnames="n")
_majority = jax.jit(majority_vote_accuracy, static_argnames="n")
_pass = jax.jit(pass_at_n, static_argnames="n")
_mean = jax.jit(mean_accuracy, static_argnames="n")


# ------------------------------------------------------------------ driver


class BestOfNSamples(NamedTuple):
    """G sampled solutions per problem with their grades and reward-model scores."""

    texts: list[str]  # [B * G] decoded responses, problem-major
    correct: np.ndarray  # [B, G] float32, 1 where the final answer is right
    answer_ids: np.ndarray  # [B, G] int32 row-local answer classes, -1 without an answer
    step_scores: np.ndarray | None  # [B, G, K] PRM probability of each step prefix
    step_mask: np.ndarray  # [B, G, K] float32, 1 for real steps
    orm_scores: np.ndarray | None  # [B, G] ORM probability
    response_mask: np.ndarray  # [B, G, T] int32
    input_ids: np.ndarray  # [B, G, P + T] int32, the rows the PRM and ORM scored
    attention_mask: np.ndarray  # [B, G, P + T] int32
    seconds: dict[str, float]


def sample_and_score(
    sampler: Any,
    params: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    golds: Sequence[str],
    *,
    grader: Any,
    key: jax.Array,
    samples_per_problem: int,
    batch_size: int,
    prm: Any = None,  # (token-classification module, params), or a StepScorer
    questions: Sequence[str] | None = None,  # [B] what a StepScorer renders
    orm: tuple[Any, Any] | None = None,
    max_steps: int = 16,
    separators: Sequence[str] = DEFAULT_SEPARATORS,
    show_progress: bool = False,
) -> BestOfNSamples:
    """Samples G solutions per problem, grades them and scores them with the PRM and ORM.

    The stages are rlr.training.pipeline's: `sample_and_judge` on the B x G repeated prompts
    (PPO's row layout: prompt left-padded to P, response right-padded to T), then
    `score_judged` in fixed [batch_size, P + T] calls (the readouts PPO's rewards use; a PRM
    given as a StepScorer scores the steps as text, rendered with `questions`). Best-of-N's
    own part is the answer classes of majority voting and the [B, G, ...] layout.
    """
    from tqdm.auto import tqdm

    if len(prompts) != len(golds) or not prompts:
        raise ValueError(
            f"need one gold answer per prompt (and at least one prompt); got {len(prompts)} "
            f"prompts and {len(golds)} gold answers"
        )
    if samples_per_problem < 1:
        raise ValueError(f"samples_per_problem must be >= 1; got {samples_per_problem}")
    B, G = len(prompts), samples_per_problem
    if isinstance(prm, StepScorer) and (questions is None or len(questions) != B):
        raise ValueError("a StepScorer PRM needs one question per prompt (questions=)")
    repeat = lambda xs: [x for x in xs for _ in range(G)]  # noqa: E731
    with tqdm(total=B * G, desc="sampling", disable=not show_progress) as bar:
        judged = sample_and_judge(
            sampler,
            params,
            tokenizer,
            repeat(prompts),
            repeat(golds),
            grader=grader,
            key=key,
            batch_size=batch_size,
            max_steps=max_steps,
            separators=separators,
            progress=bar,
        )
    keys = [answer_key(t) for t in judged.texts]
    answer_ids = answer_classes([keys[b * G : (b + 1) * G] for b in range(B)])
    t0 = time.perf_counter()
    step_scores, orm_out = score_judged(
        judged,
        tokenizer,
        batch_size=batch_size,
        prm=prm,
        orm=orm,
        questions=None if questions is None else repeat(questions),
    )
    seconds = {**judged.seconds, "scoring": time.perf_counter() - t0}
    ids, attn = judged.rows()
    grouped = lambda x: None if x is None else x.reshape(B, G, *x.shape[1:])  # noqa: E731
    return BestOfNSamples(
        texts=judged.texts,
        correct=judged.correct.astype(np.float32).reshape(B, G),
        answer_ids=answer_ids,
        step_scores=grouped(step_scores),
        step_mask=grouped(judged.step_mask),
        orm_scores=grouped(orm_out),
        response_mask=grouped(judged.batch.mask),
        input_ids=grouped(ids),
        attention_mask=grouped(attn),
        seconds={name: round(seconds[name], 3) for name in ("sampling", "grading", "scoring")},
    )


def summarize(samples: BestOfNSamples, *, ns: Sequence[int] | None = None) -> dict[str, Any]:
    """The JSON-able result: {"n", "accuracy": {method: [acc at each n]}, "num_problems",
    "samples_per_problem", "mean_response_tokens", "answered_fraction", "seconds"}."""
    B, G = samples.correct.shape
    ns = list(ns) if ns else default_ns(G)
    for n in ns:
        _check_n(n, G)
    accuracy = best_of_n_table(
        samples.correct,
        samples.answer_ids,
        ns=ns,
        prm_step_scores=samples.step_scores,
        step_mask=samples.step_mask if samples.step_scores is not None else None,
        orm_scores=samples.orm_scores,
    )
    return {
        "n": ns,
        "accuracy": accuracy,
        "num_problems": B,
        "samples_per_problem": G,
        "mean_response_tokens": float(samples.response_mask.sum(axis=2).mean()),
        "answered_fraction": float(np.mean(samples.answer_ids >= 0)),
        "seconds": samples.seconds,
    }


def format_table(result: dict[str, Any]) -> str:
    """The result as plain text: one row per method, one column per n."""
    ns = result["n"]
    lines = [f"{'method':<10}" + "".join(f"{'N=' + str(n):>9}" for n in ns)]
    for name, values in result["accuracy"].items():
        lines.append(f"{name:<10}" + "".join(f"{v:>9.4f}" for v in values))
    return "\n".join(lines)


def best_of_n_figure(result: dict[str, Any]):
    """A matplotlib Figure of accuracy vs N (log2 axis), one line per method."""
    from matplotlib.figure import Figure  # no pyplot: works under any backend, Agg included

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    for name, values in result["accuracy"].items():
        style = "--" if name in ("pass", "mean") else "-"
        ax.plot(result["n"], values, style, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(result["n"], [str(n) for n in result["n"]])
    ax.set_xlabel("N (samples per problem)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"best-of-N on {result['num_problems']} problems", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- CLI
