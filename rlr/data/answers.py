"""Minimal gold-answer extraction used by the readers (the grading package does the full job)."""

from __future__ import annotations

import re

_BOXED_COMMANDS = ("\\boxed", "\\fbox")
_CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")
_THE_ANSWER_IS = re.compile(r"[Tt]he answer is:?\s*(.+?)\s*\.?\s*$")


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, or None.

    Braces are matched, escaped braces (`\\{`, `\\}`) are skipped, and `\\boxed 5` (no
    braces) yields the token after the space. One backward search and one forward scan: linear
    in len(text). An unbalanced last box gives None rather than a guess.
    """
    start = max(text.rfind(command) for command in _BOXED_COMMANDS)
    if start < 0:
        return None
    command = next(c for c in _BOXED_COMMANDS if text.startswith(c, start))
    i = start + len(command)
    if i < len(text) and text[i] == " ":
        match = re.match(r" +([^\s$]+)", text[i:])
        return match.group(1) if match else None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    j = i
    while j < len(text):
        char = text[j]
        if char == "\\":
            j += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
        j += 1
    return None


def strip_calculator_notes(text: str) -> str:
    """GSM8K solution text without its `<<a*b=c>>` calculator annotations."""
    return _CALCULATOR_NOTE.sub("", text)


def answer_from_text(text: str) -> str | None:
    """Gold answer of a free-form solution: the last `\\boxed{}`, else 'The answer is X'.

    Used for MathInstruct outputs; None when neither form is present.
    """
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    match = _THE_ANSWER_IS.search(lines[-1])
    return match.group(1).strip() if match else None
