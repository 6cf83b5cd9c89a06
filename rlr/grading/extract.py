"""Final-answer extraction from model responses and reference solutions.

Every search here is a `str.rfind` or a single forward scan, so extraction is linear in the
length of the text: no regular expression with nested quantifiers touches model output, and
10k nested braces or a megabyte of text return in milliseconds.
"""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_IS = "answer is"
_GSM8K_MARK = "####"
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)


def extract_answer(text: str | None) -> str | None:
    """The final answer in `text`, or None when it states none.

    Looked for in this order (the first kind present wins, and within a kind the last one):
      1. `\\boxed{...}` / `\\fbox{...}` with nested braces, or `\\boxed 5` without braces;
         an unclosed last box gives None (a truncated response has no answer);
      2. the GSM8K reference mark `#### x`;
      3. "The answer is x" (any case, also "final answer is: x"), up to the end of its line
         or sentence, without a trailing period or surrounding `$...$`;
      4. a last non-empty line `A: x` (GSM8K model-solution style).
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError(f"extract_answer expects a str or None; got {type(text).__name__}")
    box = _last_box(text)
    if box is not _ABSENT:
        return box
    for finder in (_after_gsm8k_mark, _after_answer_is, _final_answer_line):
        found = finder(text)
        if found is not None:
            return found
    return None


_ABSENT = object()


def _last_box(text: str) -> str | None | object:
    """Content of the last box command; None if unclosed or empty; _ABSENT if there is none."""
    n = len(text)
    # Last position of each command, each searched backwards from where its previous match was
    # rejected, so a text full of look-alike commands is still scanned once per command.
    positions = {name: text.rfind(name) for name in _BOX_COMMANDS}
    while True:
        command = max(positions, key=positions.__getitem__)
        start = positions[command]
        if start < 0:
            return _ABSENT
        i = start + len(command)
        if i < n and text[i].isalpha():
            # `\boxedx` or `\fboxsep` is another command's name, not a box: look before it.
            positions[command] = text.rfind(command, 0, start)
            continue
        break
    while i < n and text[i] in " \t":
        i += 1
    if i >= n:
        return None
    if text[i] != "{":
        j = i
        while j < n and not text[j].isspace() and text[j] != "$":
            j += 1
        return _clean(text[i:j])
    content = _braced(text, i)
    if content is None:
        return None
    return _clean(content)


def _braced(text: str, open_index: int) -> str | None:
    """The text inside the brace group opening at `open_index`, or None when it never closes.

    `\\{` and `\\}` are literal braces (LaTeX sets) and do not count towards the depth.
    """
    depth = 0
    # One pass over the braces and escapes only; a single-token regex cannot backtrack.
    for match in _BRACE_TOKEN.finditer(text, open_index):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : match.start()]
    return None


def _after_gsm8k_mark(text: str) -> str | None:
    position = text.rfind(_GSM8K_MARK)
    if position < 0:
        return None
    return _clean(_rest_of_line(text, position + len(_GSM8K_MARK)))


def _after_answer_is(text: str) -> str | None:
    position = text.lower().rfind(_ANSWER_IS)
    if position < 0:
        return None
    rest = _rest_of_line(text, position + len(_ANSWER_IS)).lstrip(" :")
    # A sentence ends at ". " (a decimal point is never followed by a space).
    sentence_end = rest.find(". ")
    if sentence_end >= 0:
        rest = rest[:sentence_end]
    return _clean(rest)


def _final_answer_line(text: str) -> str | None:
    end = len(text)
    while True:
        line_start = text.rfind("\n", 0, end) + 1
        line = text[line_start:end].strip()
        if line or line_start == 0:
            break
        end = line_start - 1
    if not line.startswith("A:"):
        return None
    return _clean(line[2:])


def _rest_of_line(text: str, start: int) -> str:
    end = text.find("\n", start)
    return text[start : len(text) if end < 0 else end]


def _clean(answer: str) -> str | None:
    """Strips spaces, one trailing period and an enclosing `$...$`; None when nothing is left."""
    answer = answer.strip()
    if answer.endswith("."):
        answer = answer[:-1].rstrip()
    if len(answer) >= 2 and answer.startswith("$") and answer.endswith("$"):
        answer = answer.strip("$").strip()
    if answer.endswith("."):
        answer = answer[:-1].rstrip()
    return answer or None
