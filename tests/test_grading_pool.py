"""Grader: order, timeouts, crashes, the pathological corpus, and the in-process mode."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from rlr.grading import Grader, is_equivalent

TIMEOUT_S = 1.5

# Each must be graded False within the timeout, without hanging or losing the pool.
PATHOLOGICAL = {
    "tower of exponents": "9^9^9^9^9",
    "braced tower": "9^{9^{9^{9^{9}}}}",
    "power tower of tens": "10^{10^{10^{10}}}",
    "power of a power": "2^{2^{64}}",
    "huge factorial": "100000000!",
    "factorial of a power": "(10^{10})!",
    "huge gamma": "\\Gamma(10^{10})",
    "huge binomial": "\\binom{10^{10}}{10^5}",
    "huge product": "10^{100000000} \\cdot 10^{100000000}",
    "10k nested braces": "{" * 10_000 + "1" + "}" * 10_000,
    "megabyte string": "1" * 1_000_000,
    "megabyte of latex": "\\frac{1}{2}+" * 100_000,
    "999-digit literal": "9" * 999,
    "control and NUL characters": "\x00\x01\x02 5 \x1b[31m\x7f",
    "unclosed fraction": "\\frac{1}{",
    "unclosed box": "\\boxed{1",
    "unbalanced closers": "}}}}1{{{{",
    "python import": "__import__('os').system('echo rlr-grading-injection')",
    "python eval": "eval('1+1')",
    "latex input": "\\input{/etc/passwd}",
    "latex include": "\\include{/etc/shadow}",
    "nested radicals": "\\sqrt{\\sqrt{\\sqrt{\\sqrt{2}}}}" * 50,
    "lone backslash": "\\",
    "surrogate-like text": "\udcff\ud800",
}


def _check_with_faults(pred: str | None, gold: str) -> bool:
    """is_equivalent, except that special predictions hang, crash or raise inside the worker."""
    if pred == "hang":
        time.sleep(600)
    if pred == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if pred == "exit":
        os._exit(3)
    if pred == "allocate":
        return len(bytearray(2 << 30)) > 0
    if pred == "raise":
        raise RuntimeError("check failed on purpose")
    return is_equivalent(pred, gold)


NORMAL = [
    ("18", "18", True),
    ("\\frac{1}{2}", "0.5", True),
    ("(1,2)", "(2,1)", False),
    ("2\\sqrt{2}", "\\sqrt{8}", True),
    ("1,000", "1000", True),
    ("\\{1,2\\}", "\\{1,3\\}", False),
    (None, "3", False),
    ("50\\%", "0.5", False),
]


@pytest.fixture(scope="module")
def grader():
    with Grader(num_workers=2, timeout_s=TIMEOUT_S) as pool:
        yield pool


def test_grades_in_input_order(grader):
    # Radicals need math-verify, so these go through the workers, interleaved with numbers
    # that the calling process decides itself.
    preds = [f"\\sqrt{{{i * i}}}" if i % 2 else str(i) for i in range(40)]
    golds = [str(i if i % 3 else i + 1) for i in range(40)]
    assert grader.grade(preds, golds) == [i % 3 != 0 for i in range(40)]
    assert grader.grade([], []) == []


def test_pathological_corpus_is_false_within_timeout(grader):
    names = sorted(PATHOLOGICAL)
    preds = [PATHOLOGICAL[name] for name in names]
    timeouts_before = grader.num_timeouts
    start = time.monotonic()
    verdicts = grader.grade(preds, ["1"] * len(preds))
    elapsed = time.monotonic() - start
    assert verdicts == [False] * len(preds), [n for n, v in zip(names, verdicts) if v]
    # Every item costs at most the timeout plus a worker restart, spread over two workers.
    assert elapsed < len(preds) * (TIMEOUT_S + 1.0) / 2
    assert grader.num_timeouts > timeouts_before
    # The pool still grades normal answers correctly afterwards.
    preds, golds, expected = zip(*NORMAL)
    assert grader.grade(list(preds), list(golds)) == list(expected)


def test_grade_responses_extracts_first(grader):
    responses = ["so \\boxed{\\dfrac{1}{2}}", "#### 1,000", "The answer is 7.", "no idea", None]
    assert grader.grade_responses(responses, ["0.5", "1000", "8", "1", "1"]) == [
        True,
        True,
        False,
        False,
        False,
    ]


def test_survives_timeouts_and_crashes():
    with Grader(num_workers=2, timeout_s=1.0, check_fn=_check_with_faults) as pool:
        first_pids = set(pool.worker_pids)
        preds = ["1", "hang", "2", "segfault", "3", "exit", "raise", "4", "hang", "5"]
        golds = ["1", "1", "2", "1", "3", "1", "1", "5", "1", "5"]
        start = time.monotonic()
        verdicts = pool.grade(preds, golds)
        elapsed = time.monotonic() - start
        assert verdicts == [True, False, True, False, True, False, False, False, False, True]
        assert pool.num_timeouts == 2
        assert pool.num_crashes == 2
        assert pool.num_errors == 1
        assert pool.num_restarts == 4
        assert "check failed on purpose" in pool.last_errors[-1]
        assert len(pool.worker_pids) == 2
        assert set(pool.worker_pids) - first_pids
        assert elapsed < 10.0
        # Grading goes on correctly with the replacement workers.
        preds, golds, expected = zip(*NORMAL)
        assert pool.grade(list(preds) * 3, list(golds) * 3) == list(expected) * 3
        assert pool.num_graded == 10 + 3 * len(NORMAL)
    assert pool.worker_pids == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is Linux-only")
def test_memory_limit_turns_runaway_allocation_into_false():
    with Grader(
        num_workers=1, timeout_s=5.0, check_fn=_check_with_faults, memory_limit_mb=512
    ) as pool:
        assert pool.grade(["allocate", "1", "allocate", "2"], ["1", "1", "1", "2"]) == [
            False,
            True,
            False,
            True,
        ]
        assert pool.num_errors + pool.num_crashes == 2
        assert pool.num_timeouts == 0


def test_killed_worker_is_replaced(grader):
    victim = grader.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.2)
    crashes_before = grader.num_crashes
    preds, golds, expected = zip(*NORMAL)
    assert grader.grade(list(preds), list(golds)) == list(expected)
    assert victim not in grader.worker_pids
    assert grader.num_crashes == crashes_before + 1


def test_in_process_mode_matches_pool(grader):
    preds, golds, expected = zip(*NORMAL)
    with Grader(num_workers=0) as local:
        assert local.worker_pids == []
        assert local.grade(list(preds), list(golds)) == list(expected)
        assert local.grade(["raise"], ["1"]) == [False]
    with Grader(num_workers=0, check_fn=_check_with_faults) as local:
        assert local.grade(["raise", "1"], ["1", "1"]) == [False, True]
        assert local.num_errors == 1


def test_bad_arguments(grader):
    with pytest.raises(ValueError, match="same length"):
        grader.grade(["1"], ["1", "2"])
    with pytest.raises(ValueError, match="num_workers"):
        Grader(num_workers=-1)
    with pytest.raises(ValueError, match="timeout_s"):
        Grader(num_workers=0, timeout_s=0)
    with pytest.raises(ValueError, match="memory_limit_mb"):
        Grader(num_workers=0, memory_limit_mb=10)
    with pytest.raises(ValueError, match="start_method"):
        Grader(num_workers=0, start_method="fork")
    closed = Grader(num_workers=0)
    closed.close()
    with pytest.raises(ValueError, match="closed"):
        closed.grade(["1"], ["1"])
