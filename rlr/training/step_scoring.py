"""Scoring a policy's steps with a PRM that reads text: released PRMs, or any PRM whose
tokenizer is not the policy's.

Steps are cut from the policy's tokens (the step ends PPO already found), rendered as text in
the PRM's own format, scored by its StepScorer, and each score is put back at the policy
token where its step ends: the same [B, K] step_scores array, aligned with step_end, that an
in-graph rlr PRM gives. rlr.token_rewards then places step k's reward at response column
step_end[b, k].
"""

from __future__ import annotations

import filecmp
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np


def policy_step_texts(
    tokenizer: Any,
    tokens: np.ndarray,  # [B, T] response ids
    step_end: np.ndarray,  # [B, K] response index of each step's last token
    step_mask: np.ndarray,  # [B, K] 1 for real steps
) -> list[list[str]]:  # B lists of the real steps' texts
    """The text of each real step: tokens step_end[k-1]+1 .. step_end[k], decoded without
    special tokens and stripped of the separators around it."""
    tokens, step_end, step_mask = map(np.asarray, (tokens, step_end, step_mask))
    out = []
    for row, ends, mask in zip(tokens, step_end, step_mask):
        steps, start = [], 0
        for end, real in zip(ends, mask):
            if real <= 0:
                break
            piece = row[start : int(end) + 1].tolist()
            steps.append(tokenizer.decode(piece, skip_special_tokens=True).strip())
            start = int(end) + 1
        out.append(steps)
    return out


def score_policy_steps(
    scorer: Any,  # rlr.models.StepScorer
    questions: Sequence[str],  # [B]
    tokenizer: Any,  # the policy's
    tokens: np.ndarray,  # [B, T]
    step_end: np.ndarray,  # [B, K]
    step_mask: np.ndarray,  # [B, K]
) -> np.ndarray:  # [B, K] float32, 0 on padded steps
    """The PRM's probability for each policy step, aligned with step_end."""
    step_mask = np.asarray(step_mask)
    if len(questions) != step_mask.shape[0]:
        raise ValueError(f"{len(questions)} questions for {step_mask.shape[0]} rows")
    texts = policy_step_texts(tokenizer, tokens, step_end, step_mask)
    scores = scorer.score_steps(list(questions), texts)
    out = np.zeros(step_mask.shape, np.float32)
    for b, row in enumerate(scores):
        out[b, : len(row)] = row
    return out


def same_tokenizer(first: str | pathlib.Path | None, second: str | pathlib.Path | None) -> bool:
    """Whether two HF directories hold the same tokenizer.json (a directory without one, as
    `rlr train-prm` may write, counts as the same)."""
    if first is None or second is None:
        return True
    a, b = pathlib.Path(first) / "tokenizer.json", pathlib.Path(second) / "tokenizer.json"
    if not a.is_file() or not b.is_file():
        return True
    return filecmp.cmp(a, b, shallow=False)
