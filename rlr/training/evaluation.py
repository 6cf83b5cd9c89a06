"""Policy evaluation on held-out problems, and the reward-hacking diagnostics.

Hacking shows up in the shape of solutions before it shows in accuracy, so the same
statistics are computed for every rollout batch and every evaluation: steps per solution,
response length, the fraction of filler steps (well-formed but useless, e.g. "Step ready.")
and of repeated steps.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from rlr.data.steps import DEFAULT_SEPARATORS, step_texts
from rlr.data.synthetic import FILLER_STEPS
from rlr.training.batching import encode_prompts

_FILLERS = frozenset(FILLER_STEPS)
_CONTENT = re.compile(r"[0-9=+\-*/^\\]")


def is_filler_step(step: str) -> bool:
    """A step that says nothing: one of the synthetic task's fillers, or a short line with no
    digit, operator or LaTeX (e.g. "Step ready.", "Let me think.", an emoji)."""
    step = step.strip()
    if step in _FILLERS:
        return True
    return not _CONTENT.search(step) and len(step.split()) <= 4


def solution_stats(
    texts: Sequence[str], *, separators: Sequence[str] = DEFAULT_SEPARATORS
) -> dict[str, float]:
    """Mean steps per solution and the fractions of filler and repeated steps over all steps."""
    steps_total = filler = repeated = 0
    for text in texts:
        steps = step_texts(text, separators=separators)
        steps_total += len(steps)
        filler += sum(is_filler_step(s) for s in steps)
        seen: set[str] = set()
        for s in steps:
            repeated += s in seen
            seen.add(s)
    n = max(len(texts), 1)
    return {
        "steps_per_solution": steps_total / n,
        "filler_step_fraction": filler / max(steps_total, 1),
        "repeated_step_fraction": repeated / max(steps_total, 1),
    }


def ended_without_eos(
    tokens: np.ndarray,  # [B, T] sampled response tokens
    mask: np.ndarray,  # [B, T] 1 for generated tokens (a prefix of each row)
    eos_id: int | Sequence[int],
) -> np.ndarray:  # [B] bool
    """Rows whose last generated token is not an EOS: they hit the token limit (truncated)."""
    tokens, mask = np.asarray(tokens), np.asarray(mask)
    lengths = mask.sum(axis=1).astype(int)
    last = tokens[np.arange(len(tokens)), np.maximum(lengths - 1, 0)]
    return ~np.isin(last, np.atleast_1d(eos_id))


def decode_responses(tokenizer: Any, tokens: np.ndarray, mask: np.ndarray) -> list[str]:
    """Response texts from sampled [B, T] tokens (special tokens such as EOS dropped)."""
    return [
        tokenizer.decode(row[: int(valid.sum())].tolist(), skip_special_tokens=True)
        for row, valid in zip(np.asarray(tokens), np.asarray(mask))
    ]


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Accuracy and solution-shape statistics of one evaluation pass."""

    accuracy: float
    response_length: float
    steps_per_solution: float
    filler_step_fraction: float
    repeated_step_fraction: float
    truncated_fraction: float
    num_problems: int
    samples: tuple[dict[str, Any], ...] = ()

    def metrics(self, prefix: str) -> dict[str, float]:
        """Scalar fields as `{prefix}/{name}` for a MetricsWriter."""
        return {
            f"{prefix}/{f.name}": getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "samples"
        }


def evaluate_policy(
    sampler: Any,
    params: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    golds: Sequence[str],
    *,
    grader: Any,
    key: jax.Array,
    max_prompt_tokens: int,
    batch_size: int,
    separators: Sequence[str] = DEFAULT_SEPARATORS,
    keep_samples: int = 8,
) -> EvalResult:
    """Samples one response per prompt with `sampler` (an rlr.sampling.Sampler, greedy when
    its temperature is 0) and grades it. Prompts are padded to whole batches of `batch_size`
    so the sampler compiles once."""
    if len(prompts) != len(golds):
        raise ValueError(f"{len(prompts)} prompts but {len(golds)} gold answers")
    if not prompts:
        raise ValueError("evaluate_policy needs at least one prompt")
    texts: list[str] = []
    lengths: list[int] = []
    truncated = 0
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        real = len(chunk)
        chunk += [chunk[-1]] * (batch_size - real)
        ids, mask, _ = encode_prompts(tokenizer, chunk, prompt_len=max_prompt_tokens)
        out = sampler(params, ids, mask, jax.random.fold_in(key, start))
        tokens, out_mask = np.asarray(out.tokens)[:real], np.asarray(out.mask)[:real]
        texts += decode_responses(tokenizer, tokens, out_mask)
        row_lengths = out_mask.sum(axis=1)
        lengths += row_lengths.tolist()
        truncated += int(ended_without_eos(tokens, out_mask, tokenizer.eos_token_id).sum())
    correct = grader.grade_responses(texts, list(golds))
    stats = solution_stats(texts, separators=separators)
    samples = tuple(
        {"prompt": p, "response": t, "gold": g, "correct": bool(c)}
        for p, t, g, c in list(zip(prompts, texts, golds, correct))[:keep_samples]
    )
    return EvalResult(
        accuracy=float(np.mean(correct)),
        response_length=float(np.mean(lengths)),
        truncated_fraction=truncated / len(prompts),
        num_problems=len(prompts),
        samples=samples,
        **stats,
    )
