"""rlr's answer normalisation and the exact fast path for plain numbers.

Normalisation is string surgery only (no parser, nothing executed) and every step is linear in
the answer's length. Choices worth knowing:

- Percent: a trailing percent sign is dropped, so "50%" equals "50" but NOT "0.5". GSM8K and
  MATH gold answers to "what percent" questions are the number of percent ("50"), and a model
  that answers 0.5 to such a question has not given the asked-for quantity.
- Thousands commas are removed only when the whole answer is one number written with groups of
  exactly three digits ("1,000" or "-12,345.5"), so tuples and lists such as "(1,2)" or "1,2"
  keep their commas.
- Units: trailing unit words ("5 cm", "12 dollars", "3 \\text{ hours}") and a leading dollar sign
  are dropped, but only when what is left ends in a digit, so "\\text{Evelyn}" or "m" alone are
  kept.
- Degrees: "^\\circ", "^{\\circ}", the degree sign and the words "degree(s)" are dropped.
"""

from __future__ import annotations

import fractions
import re

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TEXT_COMMANDS = ("\\text", "\\textbf", "\\textit", "\\textrm", "\\mathrm", "\\mbox", "\\mathbf")
_TEXT_TOKEN = re.compile(r"\\[a-zA-Z]+ *\{?|\\.|[{}]", re.DOTALL)
# A LaTeX row break `\\` is matched first so that its second backslash is not read as `\ `.
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)
_SPACING = re.compile(r"\\\\|\\[,;:! ]|\\q?quad(?![a-zA-Z])")
_SIZING = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree(?![a-zA-Z])")
_UNIT_WORDS = frozenset(
    """
    degree degrees deg cm cm^2 cm^3 m m^2 m^3 km mm inch inches in ft feet foot yard yards yd
    mile miles mi meter meters metre metres kilometer kilometers centimeter centimeters
    second seconds sec s minute minutes min hour hours hr hrs h day days week weeks month months
    year years yr yrs gram grams g kg kilogram kilograms pound pounds lb lbs ounce ounces oz
    liter liters litre litres l ml gallon gallons cup cups dollar dollars cent cents usd
    square sq cubic units unit mph kmh percent points point people students apples cookies
    """.split()
)
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_INTEGER_OR_DECIMAL = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_SLASH_FRACTION = re.compile(r"([-+]?\d+)/(\d+)")
_LATEX_FRACTION = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}")
_LATEX_SHORT_FRACTION = re.compile(r"(-?)\\frac(\d)(\d)")
_CHOICE = re.compile(r"\(?([A-E])\)?")
_MAX_NUMBER_CHARS = 400


def normalize_answer(answer: str) -> str:
    """rlr's canonical string for an answer (see the module docstring for the choices).

    Strips control characters, `$` and `\\(...\\)` delimiters, `\\text{}`-style wrappers, unit
    words where safe, `\\left`/`\\right`, spacing commands, degrees, a trailing percent sign or
    period, thousands commas in a single number, and spaces that do not separate two words;
    `\\dfrac`/`\\tfrac` become `\\frac`. A multiple-choice answer "(B)" becomes "B".
    """
    if not isinstance(answer, str):
        raise ValueError(f"normalize_answer expects a str; got {type(answer).__name__}")
    s = _CONTROL_CHARS.sub("", answer).replace("\n", " ").replace("\t", " ").strip()
    s = _strip_delimiters(s)
    s = _unwrap_text_commands(s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _SIZING.sub("", s)
    s = _SPACING.sub(lambda m: m.group() if m.group() == "\\\\" else " ", s)
    s = _DEGREES.sub("", s)
    s = s.replace("\\$", "").replace("$", "")
    s = s.strip()
    s = _strip_trailing_period(s)
    s = _strip_percent(s)
    s = _strip_units(s)
    s = _strip_percent(s)
    s = _strip_trailing_period(s)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    s = _remove_spaces(s)
    choice = _CHOICE.fullmatch(s)
    if choice:
        return choice.group(1)
    return s


def plain_number(normalized: str) -> fractions.Fraction | None:
    """The exact value of a normalised plain number ("12", "-0.25", "3/4", "\\frac{3}{4}").

    None for anything else, including numbers too long to be a sensible answer: the fast path
    never hands big exponents or huge literals to an arbitrary-precision library.
    """
    if len(normalized) > _MAX_NUMBER_CHARS:
        return None
    s = normalized
    sign = 1
    if s.startswith("-") and (s[1:].startswith("\\frac")):
        sign, s = -1, s[1:]
    if _INTEGER_OR_DECIMAL.fullmatch(s):
        return fractions.Fraction(s)
    match = _SLASH_FRACTION.fullmatch(s)
    if match:
        numerator, denominator = int(match.group(1)), int(match.group(2))
        return None if denominator == 0 else sign * fractions.Fraction(numerator, denominator)
    match = _LATEX_FRACTION.fullmatch(s) or _LATEX_SHORT_FRACTION.fullmatch(s)
    if match:
        numerator, denominator = int(match.group(2)), int(match.group(3))
        if denominator == 0:
            return None
        inner_sign = -1 if match.group(1) else 1
        return sign * inner_sign * fractions.Fraction(numerator, denominator)
    return None


def has_balanced_braces(s: str) -> bool:
    """Whether the unescaped braces of `s` pair up (`\\{` and `\\}` are literal braces)."""
    depth = 0
    for match in _BRACE_TOKEN.finditer(s):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def multiple_choice(normalized: str) -> str | None:
    """The letter of a normalised multiple-choice answer ("A".."E"), else None."""
    return normalized if len(normalized) == 1 and "A" <= normalized <= "E" else None


def _strip_delimiters(s: str) -> str:
    for opening, closing in (("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$"), ("$", "$")):
        if len(s) >= len(opening) + len(closing) and s.startswith(opening) and s.endswith(closing):
            s = s[len(opening) : len(s) - len(closing)].strip()
    return s


def _unwrap_text_commands(s: str) -> str:
    """Replaces `\\text{x}` (and friends) by " x " in one pass with a stack of open groups."""
    if "\\" not in s:
        return s
    out: list[str] = []
    opened_by_text: list[bool] = []
    last = 0
    for match in _TEXT_TOKEN.finditer(s):
        token = match.group()
        out.append(s[last : match.start()])
        last = match.end()
        if token == "{":
            opened_by_text.append(False)
            out.append(token)
        elif token == "}":
            out.append(" " if opened_by_text and opened_by_text.pop() else token)
        elif token.endswith("{") and token[:-1].rstrip() in _TEXT_COMMANDS:
            opened_by_text.append(True)
            out.append(" ")
        elif token.endswith("{"):
            opened_by_text.append(False)
            out.append(token)
        else:
            out.append(token)
    out.append(s[last:])
    return "".join(out)


def _strip_trailing_period(s: str) -> str:
    while s.endswith("."):
        s = s[:-1].rstrip()
    return s


def _strip_percent(s: str) -> str:
    for sign in ("\\%", "%"):
        if s.endswith(sign):
            return s[: -len(sign)].rstrip()
    return s


def _strip_units(s: str) -> str:
    if s.startswith("\\$"):
        s = s[2:].lstrip()
    words = s.split(" ")
    while len(words) > 1 and words[-1].strip("{}^.").lower() in _UNIT_WORDS:
        candidate = words[:-1]
        while candidate and not candidate[-1]:
            candidate.pop()
        if (
            not candidate
            or not candidate[-1][-1:].isdigit()
            and candidate[-1].lower() not in (_UNIT_WORDS)
        ):
            break
        words = candidate
    return " ".join(words).strip()


def _remove_spaces(s: str) -> str:
    """Drops spaces except between two letters (keeps `\\pi r` and "no solution" apart)."""
    if " " not in s:
        return s
    out: list[str] = []
    previous = ""
    pieces = s.split()
    for piece in pieces:
        if previous and previous[-1].isalpha() and piece[0].isalpha():
            out.append(" ")
        out.append(piece)
        previous = piece
    return "".join(out)
