"""The timing protocol every benchmark in bench/ follows.

1. Measure on a quiet machine: print `load_line("before")` first and `load_line("after")` last.
   Each gives the 1, 5 and 15-minute load averages, and a WARNING line when the 1-minute value
   is above 1.0 (`LOAD_LIMIT`): other work then shares the CPUs and the figures are not fit to
   publish.
2. Interleave rlr and its peer: `interleaved` warms every function up, then runs rounds in
   which each function runs once in turn (rlr, peer, rlr, peer, ...), so that a change of load
   during the measurement falls on every side alike.
3. Report the median of at least 5 runs (`--repeats 5`, `MIN_REPEATS`), with the spread
   (min-max), and ratios of medians.

The benchmarks import this file as `protocol` (a script's own folder is first on sys.path);
it uses the standard library only.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

LOAD_LIMIT = 1.0  # 1-minute load average above which figures are not publishable
MIN_REPEATS = 5  # the fewest runs whose median the protocol reports


def load_line(when: str) -> str:
    """The load averages now, e.g. "load average before: 0.12 0.30 0.41 (1, 5, 15 min)", plus
    a second line starting with WARNING when the 1-minute value is above `LOAD_LIMIT`."""
    one, five, fifteen = os.getloadavg()
    line = f"load average {when}: {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)"
    if one > LOAD_LIMIT:
        line += (
            f"\nWARNING: 1-minute load {one:.2f} > {LOAD_LIMIT}: other work shares the CPUs: "
            "figures are not publishable"
        )
    return line


def few_runs(repeats: int) -> str:
    """A note for figures from fewer than `MIN_REPEATS` runs, else "": with 3 runs,
    " (fewer than 5: a check, not a measurement)"."""
    if repeats < MIN_REPEATS:
        return f" (fewer than {MIN_REPEATS}: a check, not a measurement)"
    return ""


def runs_line(repeats: int, warmup: int = 1) -> str:
    """How the figures were taken, e.g. "median of 5 interleaved runs after 1 warm-up run(s) of
    each", with `few_runs`'s note."""
    runs = f"median of {repeats} interleaved runs after {warmup} warm-up run(s) of each"
    return runs + few_runs(repeats)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds `fn()` took by time.perf_counter, its result)."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleaved(
    fns: dict[str, Callable[[], Any]], *, repeats: int = MIN_REPEATS, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per run of each function: `warmup` untimed runs of each first, then `repeats`
    rounds in which every function runs once, in the dict's order.

    A function must finish its work before it returns (block on device arrays: the clock
    stops at the return). Results are dropped; a function that must keep one stores it itself.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0; got {repeats}, {warmup}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            seconds[name].append(timed(fn)[0])
    return seconds


def median(values: Sequence[float]) -> float:
    """The median (statistics.median) of `values`."""
    return statistics.median(values)


def spread(values: Sequence[float], *, scale: float = 1.0, digits: int = 2) -> str:
    """ "min-max" of `values` times `scale`, with `digits` decimals."""
    return f"{min(values) * scale:.{digits}f}-{max(values) * scale:.{digits}f}"


def summary(seconds: Sequence[float], *, unit: str = "ms", digits: int = 2) -> str:
    """The median and the spread of run times, e.g. "12.31 ms (11.90-13.02)"; unit s or ms."""
    scale = {"s": 1.0, "ms": 1e3}[unit]
    low_high = spread(seconds, scale=scale, digits=digits)
    return f"{median(seconds) * scale:.{digits}f} {unit} ({low_high})"
