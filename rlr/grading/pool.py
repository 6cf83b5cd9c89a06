"""`Grader`: answer checks in a pool of killable worker processes with a per-answer timeout.

sympy can spend minutes (or all memory) on an answer such as `9^9^9^9^9`, inside C code where
no signal handler runs. Each check therefore runs in a worker process; the parent keeps the
deadline and SIGKILLs a worker that passes it, grades that item False, starts a replacement and
carries on. Workers start with the "forkserver" method where the platform has it ("spawn"
elsewhere): the parent usually has JAX loaded, and forking a threaded process is unsafe. The
fork server imports the grading modules once, so a replacement worker starts in milliseconds.

Cost: starting a Grader takes about a second the first time (the fork server imports sympy
and math-verify; each worker warms up), well under 0.1 s once the fork server runs. With the
default check, answers that string normalisation decides (plain numbers, equal strings,
choice letters: nearly all of GSM8K) are graded in the calling process, about 13 us each;
only the rest crosses to a worker, adding one pipe round trip of roughly 0.1-0.2 ms to a
symbolic check of 5-20 ms. See bench/bench_grading.py for measured rates.
"""

from __future__ import annotations

import collections
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable, Sequence

from rlr.grading.equivalence import fast_verdict, is_equivalent
from rlr.grading.extract import extract_answer

CheckFn = Callable[[str | None, str], bool]

_WORKER_START_TIMEOUT_S = 120.0
_PRELOAD = ["rlr.grading.equivalence", "math_verify"]


def _worker_main(
    conn: multiprocessing.connection.Connection, check_fn: CheckFn, memory_limit_mb: int | None
) -> None:
    """Worker loop: answers (index, pred, gold) with (index, verdict, error) until None."""
    # The parent owns interrupts: Ctrl-C must not kill workers mid-answer.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_limit_mb is not None:
        _limit_address_space(memory_limit_mb)
    try:
        check_fn("1", "1")
        check_fn("\\frac{1}{2}", "0.5")
    except Exception:  # noqa: BLE001 - a failing warm-up is reported per item below
        pass
    conn.send(("ready", os.getpid()))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        index, pred, gold = task
        try:
            verdict, error = bool(check_fn(pred, gold)), None
        except Exception as exc:  # noqa: BLE001 - any failure grades the item False
            verdict, error = False, f"{type(exc).__name__}: {exc}"[:500]
        conn.send(("result", index, verdict, error))


def _limit_address_space(memory_limit_mb: int) -> None:
    """Caps this process's address space, so a runaway sympy raises MemoryError instead of
    swapping the host; a no-op where the platform does not support the limit."""
    try:
        import resource

        limit = memory_limit_mb * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass


class _Worker:
    def __init__(self, context, check_fn: CheckFn, memory_limit_mb: int | None):
        self.conn, child_conn = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_worker_main,
            args=(child_conn, check_fn, memory_limit_mb),
            daemon=True,
            name="rlr-grader",
        )
        self.process.start()
        child_conn.close()
        self.started_at = time.monotonic()
        self.ready = False
        self.task: int | None = None
        self.deadline = float("inf")

    def kill(self) -> None:
        if self.process.is_alive():
            try:
                os.kill(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.join(timeout=5.0)
        self.conn.close()


class Grader:
    """Grades predictions against gold answers in worker processes with a per-answer timeout.

    Usage::

        with Grader(num_workers=2, timeout_s=5.0) as grader:
            verdicts = grader.grade(["\\\\frac{1}{2}", "3"], ["0.5", "4"])  # [True, False]

    A check past `timeout_s` is graded False, its worker is SIGKILLed and replaced, and grading
    goes on; a worker that dies (segfault, out of memory) is replaced and its item graded False.
    Results come back in input order. Counters for metrics: `num_graded`, `num_timeouts`,
    `num_crashes`, `num_errors` (exceptions inside a check, graded False), `num_restarts`.

    `num_workers=0` runs checks in this process with no timeout or crash protection: for
    debugging only, a pathological answer can hang the caller.

    Each worker's address space is capped at `memory_limit_mb` (None: no cap; Linux only), so
    an answer that makes sympy allocate without bound fails with MemoryError and is graded
    False instead of swapping the host. A Grader is not thread-safe: grade from one thread.

    Workers start with forkserver or spawn, which re-import the main module: a script that
    creates a Grader must do so under `if __name__ == "__main__":`.

    `check_fn(pred, gold) -> bool` defaults to `is_equivalent`; it must be a module-level
    function (it is pickled by reference into the workers).
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout_s: float = 5.0,
        *,
        check_fn: CheckFn = is_equivalent,
        memory_limit_mb: int | None = 4096,
        start_method: str | None = None,
    ):
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0; got {num_workers!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0; got {timeout_s!r}")
        if memory_limit_mb is not None and memory_limit_mb < 256:
            raise ValueError(
                f"memory_limit_mb must be None or >= 256 (sympy alone needs ~150 MB); "
                f"got {memory_limit_mb!r}"
            )
        if start_method is None:
            methods = multiprocessing.get_all_start_methods()
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(
                f"start_method must be 'forkserver' or 'spawn' (fork is unsafe once JAX has "
                f"started threads); got {start_method!r}"
            )
        self.num_workers = num_workers
        self.timeout_s = float(timeout_s)
        self.check_fn = check_fn
        self.memory_limit_mb = memory_limit_mb
        self.num_graded = 0
        self.num_timeouts = 0
        self.num_crashes = 0
        self.num_errors = 0
        self.num_restarts = 0
        self.last_errors: collections.deque[str] = collections.deque(maxlen=20)
        self._context = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            self._context.set_forkserver_preload(_PRELOAD)
        self._workers: list[_Worker] = []
        self._closed = False
        if num_workers:
            self._workers = [
                _Worker(self._context, check_fn, memory_limit_mb) for _ in range(num_workers)
            ]
            self._wait_until_ready()

    # Context manager and lifetime.

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stops the workers (politely, then SIGKILL after a second)."""
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            try:
                worker.conn.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 1.0
        for worker in self._workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            worker.kill()
        self._workers = []

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (they change when one is replaced)."""
        return [worker.process.pid for worker in self._workers]

    # Grading.

    def grade(self, predictions: Sequence[str | None], golds: Sequence[str]) -> list[bool]:
        """Verdict of `check_fn(pred, gold)` for each pair, in input order; False on timeout."""
        if self._closed:
            raise ValueError("this Grader is closed; create a new one (use it as `with Grader()`)")
        predictions, golds = list(predictions), list(golds)
        if len(predictions) != len(golds):
            raise ValueError(
                f"predictions and golds must have the same length; got {len(predictions)} "
                f"and {len(golds)}"
            )
        if not self.num_workers:
            verdicts = [self._check_in_process(p, g) for p, g in zip(predictions, golds)]
        elif self.check_fn is is_equivalent:
            # String-only verdicts (plain numbers, equal strings) are safe and ~10x cheaper
            # than a pipe round trip: only the symbolic rest goes to the workers.
            verdicts = [fast_verdict(p, g) for p, g in zip(predictions, golds)]
            undecided = [i for i, verdict in enumerate(verdicts) if verdict is None]
            symbolic = self._grade_in_pool(
                [predictions[i] for i in undecided], [golds[i] for i in undecided]
            )
            for index, verdict in zip(undecided, symbolic):
                verdicts[index] = verdict
        else:
            verdicts = self._grade_in_pool(predictions, golds)
        self.num_graded += len(verdicts)
        return verdicts

    def grade_responses(self, responses: Sequence[str | None], golds: Sequence[str]) -> list[bool]:
        """`grade` on the final answers `extract_answer` finds in full responses."""
        return self.grade([extract_answer(r) for r in responses], golds)

    def _check_in_process(self, pred: str | None, gold: str) -> bool:
        try:
            return bool(self.check_fn(pred, gold))
        except Exception as exc:  # noqa: BLE001 - any failure grades the item False
            self.num_errors += 1
            self.last_errors.append(f"{type(exc).__name__}: {exc}"[:500])
            return False

    def _grade_in_pool(self, predictions: list[str | None], golds: list[str]) -> list[bool]:
        verdicts = [False] * len(predictions)
        pending = collections.deque(range(len(predictions)))
        busy = 0
        while pending or busy:
            for worker in self._workers:
                if pending and worker.ready and worker.task is None:
                    index = pending.popleft()
                    try:
                        worker.conn.send((index, predictions[index], golds[index]))
                    except (OSError, ValueError):
                        pending.appendleft(index)
                        self.num_crashes += 1
                        self._replace(worker)
                        continue
                    worker.task = index
                    worker.deadline = time.monotonic() + self.timeout_s
                    busy += 1
            now = time.monotonic()
            waits = [w.deadline - now for w in self._workers if w.task is not None] + [
                w.started_at + _WORKER_START_TIMEOUT_S - now for w in self._workers if not w.ready
            ]
            handles = [w.conn for w in self._workers] + [w.process.sentinel for w in self._workers]
            ready = multiprocessing.connection.wait(
                handles, timeout=max(0.0, min(waits)) if waits else None
            )
            for worker in list(self._workers):
                if worker.conn in ready or worker.process.sentinel in ready:
                    busy -= self._receive(worker, verdicts)
            now = time.monotonic()
            for worker in list(self._workers):
                if worker.task is not None and now >= worker.deadline:
                    self.num_timeouts += 1
                    busy -= 1
                    self._replace(worker)
                elif not worker.ready and now >= worker.started_at + _WORKER_START_TIMEOUT_S:
                    raise RuntimeError(
                        f"a grading worker did not start within {_WORKER_START_TIMEOUT_S:.0f} s; "
                        "check that rlr and math-verify import in a fresh Python process"
                    )
        return verdicts

    def _receive(self, worker: _Worker, verdicts: list[bool]) -> int:
        """Reads what `worker` sent; returns how many in-flight items finished (0 or 1)."""
        finished = 0
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if message[0] == "ready":
                    worker.ready = True
                    continue
                _, index, verdict, error = message
                if index == worker.task:
                    verdicts[index] = verdict
                    worker.task = None
                    worker.deadline = float("inf")
                    finished += 1
                if error is not None:
                    self.num_errors += 1
                    self.last_errors.append(error)
            if worker.process.is_alive():
                return finished
        except (EOFError, OSError):
            pass
        if not worker.ready:
            # Dying before the first answer is a broken environment, not a hostile answer:
            # replacing it would only loop.
            raise RuntimeError(
                f"a grading worker exited during start-up (exit code {worker.process.exitcode}); "
                "run `python -c 'import rlr.grading'` to see the import error"
            )
        # The worker died: its item (if any) stays False.
        if worker.task is not None:
            finished += 1
        self.num_crashes += 1
        self._replace(worker)
        return finished

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        index = self._workers.index(worker)
        self._workers[index] = _Worker(self._context, self.check_fn, self.memory_limit_mb)
        self.num_restarts += 1

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + _WORKER_START_TIMEOUT_S
        while not all(w.ready for w in self._workers):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise RuntimeError(
                    f"grading workers did not start within {_WORKER_START_TIMEOUT_S:.0f} s; "
                    "check that rlr and math-verify import in a fresh Python process"
                )
            pending = [w for w in self._workers if not w.ready]
            handles = [w.conn for w in pending] + [w.process.sentinel for w in pending]
            multiprocessing.connection.wait(handles, timeout=remaining)
            for worker in pending:
                try:
                    while worker.conn.poll():
                        if worker.conn.recv()[0] == "ready":
                            worker.ready = True
                except (EOFError, OSError):
                    pass
                if not worker.ready and not worker.process.is_alive():
                    self.close()
                    raise RuntimeError(
                        "a grading worker exited during start-up (exit code "
                        f"{worker.process.exitcode}). Workers re-import the main module: a "
                        "script that creates a Grader must do so under "
                        "`if __name__ == '__main__':`. Otherwise run "
                        "`python -c 'import rlr.grading'` to see the import error"
                    )
