"""SIGTERM / SIGINT handling: finish the current step, checkpoint, exit cleanly."""

from __future__ import annotations

import signal
import threading
from typing import Any


class PreemptionGuard:
    """Turns SIGTERM (preemption) and optionally SIGINT into a flag the loop polls.

    Use as a context manager around the training loop; check `requested` after each step,
    save a checkpoint and return when it is set. Previous handlers are restored on exit.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self._signals = signals
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}
        self.received: int | None = None

    @property
    def requested(self) -> bool:
        """True once one of the signals has arrived."""
        return self._event.is_set()

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        self._event.set()

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in self._signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
