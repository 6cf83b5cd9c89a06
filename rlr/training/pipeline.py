"""The host pipeline of every command that samples: sample -> cut steps -> decode -> grade ->
score.

PPO rollouts (rlr.training.ppo), held-out evaluation (rlr.training.evaluation), best-of-N
(rlr.training.bon) and Math-Shepherd labelling (rlr.training.labelling) run these stages, so a
response is cut into steps, decoded, graded and read by the PRM and ORM the same way wherever
it was sampled. Each caller keeps only what is its own: PPO samples on the mesh and scores its
rollout on the device (rlr.training.ppo_core.score_rollout), evaluation computes solution
statistics, best-of-N reranks, labelling grades prefix completions.

Rows are R responses: prompts left-padded to P, responses right-padded to T, K steps.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from rlr import readouts
from rlr.data.segmentation import DEFAULT_SEPARATORS, step_ends_from_ids
from rlr.training.batching import map_in_batches
from rlr.training.generation import (
    SampledBatch,
    decode_responses,
    ended_without_eos,
    sample_prompts,
)
from rlr.training.step_scoring import score_policy_steps


class Judged(NamedTuple):
    """R sampled responses, cut into steps, decoded and graded."""

    batch: SampledBatch  # prompt_ids / prompt_mask [R, P], tokens / mask [R, T] int32
    texts: list[str]  # [R] decoded responses (special tokens dropped)
    correct: np.ndarray | None  # [R] bool, the final answer is right (None: not graded)
    truncated: np.ndarray  # [R] bool, the response ended without an EOS id
    step_end: np.ndarray | None  # [R, K] int32, response index of each step's last token
    step_mask: np.ndarray | None  # [R, K] float32, 1 for real steps (None: not cut)
    seconds: dict[str, float]  # "sampling" (when sampled here) and "grading"

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), each [R, P + T] int32: the row layout every network
        reads (rlr.readouts)."""
        batch = self.batch
        ids = np.concatenate([batch.prompt_ids, batch.tokens], axis=1).astype(np.int32)
        attn = np.concatenate([batch.prompt_mask, batch.mask], axis=1).astype(np.int32)
        return ids, attn


def judge(
    tokenizer: Any,
    batch: SampledBatch,
    golds: Sequence[str] | None,
    *,
    grader: Any,
    eos_ids: Sequence[int],
    max_steps: int | None = None,
    separators: Sequence[str] = DEFAULT_SEPARATORS,
) -> Judged:
    """Cut steps -> decode -> grade, for sampled [R, T] responses.

    Steps are found from the token ids (`step_ends_from_ids`, K = max_steps; None: not cut).
    `golds` [R] are graded by `grader.grade_responses` (an rlr.grading.Grader); None: not
    graded. A response whose last token is not one of `eos_ids` is truncated.
    """
    t0 = time.perf_counter()
    step_end = step_mask = None
    if max_steps is not None:
        step_end, step_mask, _ = step_ends_from_ids(
            batch.tokens, batch.mask, tokenizer, max_steps=max_steps, separators=separators
        )
        step_end, step_mask = step_end.astype(np.int32), step_mask.astype(np.float32)
    texts = decode_responses(tokenizer, batch.tokens, batch.mask)
    correct = None
    if golds is not None:
        if len(golds) != len(texts):
            raise ValueError(f"{len(texts)} responses but {len(golds)} gold answers")
        correct = np.asarray(grader.grade_responses(texts, list(golds)), bool)
    truncated = ended_without_eos(batch.tokens, batch.mask, eos_ids)
    seconds = {"grading": time.perf_counter() - t0}
    return Judged(batch, texts, correct, truncated, step_end, step_mask, seconds)


def sample_and_judge(
    sampler: Any,
    params: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    golds: Sequence[str] | None,
    *,
    grader: Any = None,
    key: jax.Array,
    batch_size: int,
    prompt_tokens: int | None = None,
    max_steps: int | None = None,
    separators: Sequence[str] = DEFAULT_SEPARATORS,
    progress: Any = None,
) -> Judged:
    """Sample -> cut steps -> decode -> grade: one response per prompt (R = len(prompts)).

    Sampling is `sample_prompts` (fixed [batch_size, P] calls, batch c keyed fold_in(key, c),
    P = prompt_tokens or the prompts' rounded width); the rest is `judge`.
    """
    t0 = time.perf_counter()
    batch = sample_prompts(
        sampler,
        params,
        tokenizer,
        prompts,
        batch_size=batch_size,
        key=key,
        prompt_tokens=prompt_tokens,
        progress=progress,
    )
    sampled = time.perf_counter() - t0
    judged = judge(
        tokenizer,
        batch,
        golds,
        grader=grader,
        eos_ids=sampler.eos_ids,
        max_steps=max_steps,
        separators=separators,
    )
    return judged._replace(seconds={"sampling": sampled, **judged.seconds})


def score_judged(
    judged: Judged,
    tokenizer: Any,
    *,
    batch_size: int,
    prm: Any = None,  # (token-classification module, params), or a StepScorer
    orm: tuple[Any, Any] | None = None,  # (module, params)
    questions: Sequence[str] | None = None,  # [R] what a StepScorer renders
) -> tuple[np.ndarray | None, np.ndarray | None]:  # step scores [R, K], ORM scores [R]
    """The score stage: PRM step scores and ORM score of every judged row, read as PPO's
    rewards read them (`rlr.readouts.reward_model_scores`) in fixed [batch_size, P + T] calls.

    A PRM given as a StepScorer (a released PRM, or one with its own tokenizer) scores the
    steps as text, rendered with `questions` (rlr.training.step_scoring), and its scores are
    aligned with the same steps. None for a network not given. Needs judged steps.
    """
    from rlr.models.step_scorers import StepScorer

    if prm is None and orm is None:
        return None, None
    if judged.step_end is None:
        raise ValueError("scoring reads step ends: judge the responses with max_steps")
    text_scores = ()
    if isinstance(prm, StepScorer):
        if questions is None or len(questions) != len(judged.texts):
            raise ValueError("a StepScorer PRM needs one question per response (questions=)")
        tokens = judged.batch.tokens
        scores = score_policy_steps(
            prm, questions, tokenizer, tokens, judged.step_end, judged.step_mask
        )
        text_scores = (scores,)
    in_graph = {  # (module, params) of each network read inside the graph
        name: net
        for name, net in (("prm", prm), ("orm", orm))
        if net is not None and not isinstance(net, StepScorer)
    }
    read = jax.jit(
        functools.partial(
            readouts.reward_model_scores,
            in_graph["prm"][0] if "prm" in in_graph else None,
            in_graph["orm"][0] if "orm" in in_graph else None,
        )
    )
    params = {name: net[1] for name, net in in_graph.items()}
    ids, attn = judged.rows()
    response_mask = judged.batch.mask.astype(np.float32)
    steps, outcome = map_in_batches(
        lambda *arrays: read(params, *arrays),
        (ids, attn, response_mask, judged.step_end, judged.step_mask, *text_scores),
        batch_size=batch_size,
    )
    return (None if prm is None else steps), (None if orm is None else outcome)


class CommandInputs(NamedTuple):
    """What a command that samples an exported policy on problems starts from."""

    problems: list[Any]  # rlr.data.Problem
    prompts: list[str]  # one per problem
    sampler: Any  # rlr.sampling.Sampler
    params: Any  # the policy's
    tokenizer: Any


def command_inputs(args: Any, command: str) -> CommandInputs:
    """The inputs of `rlr eval-bon` and `rlr label-steps`: one process only (they write
    --out), --problems (the first --num-problems), the --policy directory (and --tokenizer),
    its sampler at --max-new-tokens and --temperature, and each problem's prompt in
    --prompt-style."""
    from rlr.data.prompts import build_prompt
    from rlr.training import distributed, loading
    from rlr.training.generation import SamplingSettings, sampler_for

    distributed.require_one_process(command, writes="--out")
    problems = loading.load_problems(
        args.problems, args.format, what="--problems", limit=args.num_problems
    )
    model, params, tokenizer = loading.load_policy_dir(args.policy, args.tokenizer)
    settings = SamplingSettings(args.max_new_tokens, temperature=args.temperature)
    prompts = [
        build_prompt(p.question, style=args.prompt_style, tokenizer=tokenizer) for p in problems
    ]
    sampler = sampler_for(model, tokenizer, settings)
    return CommandInputs(problems, prompts, sampler, params, tokenizer)
