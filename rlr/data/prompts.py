"""Prompt building, shared by SFT, PPO rollouts and evaluation so all see the same text."""

from __future__ import annotations

from collections.abc import Sequence

from rlr.data.records import Problem

PROMPT_STYLES = ("plain", "chat")


def _shots(few_shot: Sequence[Problem | tuple[str, str]]) -> list[tuple[str, str]]:
    shots = []
    for i, shot in enumerate(few_shot):
        if isinstance(shot, Problem):
            if shot.solution is None:
                raise ValueError(f"few_shot[{i}] ({shot.id}) has no solution to show")
            shots.append((shot.question, shot.solution))
        elif isinstance(shot, tuple) and len(shot) == 2:
            shots.append((str(shot[0]), str(shot[1])))
        else:
            raise ValueError(f"few_shot[{i}] must be a Problem or a (question, solution) pair")
    return shots


def build_prompt(
    question: str,
    *,
    style: str = "plain",
    tokenizer=None,
    few_shot: Sequence[Problem | tuple[str, str]] = (),
) -> str:
    """The prompt text for `question`; the policy's response follows it directly.

    plain: "Question: {q}\\nAnswer:\\n", preceded by each few-shot example as
    "Question: {q}\\nAnswer:\\n{solution}\\n\\n".
    chat: the tokenizer's chat template over user/assistant turns (few-shot turns first) with
    the generation prompt added.
    """
    shots = _shots(few_shot)
    if style == "plain":
        parts = [f"Question: {q}\nAnswer:\n{s}\n\n" for q, s in shots]
        return "".join(parts) + f"Question: {question}\nAnswer:\n"
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("style='chat' needs a tokenizer with a chat_template")
        messages = []
        for q, s in shots:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": s}]
        messages.append({"role": "user", "content": question})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"style must be one of {', '.join(PROMPT_STYLES)}; got {style!r}")
