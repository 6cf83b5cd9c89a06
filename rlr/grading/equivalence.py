"""Answer equivalence: rlr's normalisation, an exact fast path, then math-verify.

Nothing here evaluates model text as code. math-verify is called with LaTeX extraction only:
its plain-expression extraction goes through sympy's `parse_expr`, which runs Python `eval`, so
it is never enabled. A pathological answer can still make sympy work for a very long time (a
tower of exponents); `rlr.grading.Grader` runs this function in killable processes for that.
"""

from __future__ import annotations

import threading

from rlr.grading.normalize import (
    has_balanced_braces,
    multiple_choice,
    normalize_answer,
    plain_number,
)

# Longer predictions are graded False without parsing: no gold answer in GSM8K or MATH comes
# close, and parsing cost grows with length.
MAX_ANSWER_CHARS = 1000


def is_equivalent(
    pred: str | None,
    gold: str,
    *,
    symbolic_timeout_s: int | None = 5,
    max_answer_chars: int = MAX_ANSWER_CHARS,
) -> bool:
    """Whether the predicted final answer `pred` equals the reference answer `gold`.

    Steps: normalise both (`normalize_answer`); equal strings are equal; two plain numbers
    (integers, decimals, fractions) are compared exactly as rationals and that is final; two
    multiple-choice letters are compared as letters; anything else goes to math-verify, gold
    first: `verify(parse(gold), parse(pred))`. A None, empty, over-long or brace-unbalanced
    prediction is False.

    `symbolic_timeout_s` is math-verify's own SIGALRM timeout per parse and comparison; it only
    works on a process's main thread and is switched off elsewhere. It cannot interrupt a long
    computation inside C code, which is why the pool's SIGKILL timeout exists.
    """
    verdict = fast_verdict(pred, gold, max_answer_chars=max_answer_chars)
    if verdict is not None:
        return verdict
    pred_norm, gold_norm = normalize_answer(pred), normalize_answer(gold)
    return _symbolic_equal(pred_norm, gold_norm, timeout_s=symbolic_timeout_s)


def fast_verdict(
    pred: str | None, gold: str, *, max_answer_chars: int = MAX_ANSWER_CHARS
) -> bool | None:
    """`is_equivalent`'s verdict when it needs no symbolic maths, else None.

    Decides None/empty/over-long/unbalanced predictions, equal normalised strings, pairs of
    plain numbers and multiple-choice letters. Linear-time string work only, so it is safe to
    run on model output in the training process; `Grader` sends only the undecided rest to
    its workers.
    """
    if not isinstance(gold, str):
        raise ValueError(f"gold must be a str; got {type(gold).__name__}")
    if pred is None:
        return False
    if not isinstance(pred, str):
        raise ValueError(f"pred must be a str or None; got {type(pred).__name__}")
    if len(pred) > max_answer_chars or not has_balanced_braces(pred):
        return False
    pred_norm, gold_norm = normalize_answer(pred), normalize_answer(gold)
    if not pred_norm or not gold_norm:
        return False
    if pred_norm == gold_norm:
        return True
    gold_number, pred_number = plain_number(gold_norm), plain_number(pred_norm)
    if gold_number is not None and pred_number is not None:
        return gold_number == pred_number
    if multiple_choice(gold_norm) is not None or multiple_choice(pred_norm) is not None:
        return False
    return None


def _symbolic_equal(pred: str, gold: str, *, timeout_s: int | None) -> bool:
    import math_verify

    if threading.current_thread() is not threading.main_thread():
        timeout_s = None
    config = [math_verify.LatexExtractionConfig()]
    gold_parsed = math_verify.parse(
        "\\boxed{" + gold + "}", extraction_config=config, parsing_timeout=timeout_s
    )
    pred_parsed = math_verify.parse(
        "\\boxed{" + pred + "}", extraction_config=config, parsing_timeout=timeout_s
    )
    if not gold_parsed or not pred_parsed:
        return False
    return bool(math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s))
