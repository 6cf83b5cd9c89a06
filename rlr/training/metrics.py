"""Per-step metrics to a JSONL file and TensorBoard event files, with a console progress bar."""

from __future__ import annotations

import json
import math
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rlr.training.checkpoint import URI_PREFIXES, storage_path
from rlr.training.event_files import ScalarEventWriter


def to_python_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Converts array scalars (jax / numpy) to floats; non-scalars are dropped."""
    out = {}
    for name, value in metrics.items():
        array = np.asarray(value)
        if array.size == 1 and (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            out[name] = float(array.reshape(()))
    return out


class MetricsWriter:
    """Writes `{step, time, **metrics}` lines to `metrics.jsonl` and TensorBoard scalars.

    Args:
      directory: run directory (a local path or a URI such as gs://...); files go to
        `directory/metrics.jsonl` and `directory/tb/`.
      total_steps: length of the progress bar (None: no bar).
      tensorboard: also write TensorBoard event files.
      show: keys shown on the progress bar postfix.
      initial_step: the step a resumed run restarts from: rows logged past it by the
        interrupted run (after its last checkpoint) are dropped, so each step appears once.
      enabled: False makes every call a no-op (the processes other than 0 of a multi-process
        run, which compute the same metrics but do not write them).
    """

    def __init__(
        self,
        directory: str | pathlib.Path,
        *,
        total_steps: int | None = None,
        tensorboard: bool = True,
        show: tuple[str, ...] = (),
        initial_step: int = 0,
        description: str = "train",
        enabled: bool = True,
    ):
        self.enabled = enabled
        self._tb = self._bar = None
        if not enabled:
            return
        self.directory = storage_path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # rows past the step this run starts from were logged by an interrupted run
        drop_rows_after(self.directory / "metrics.jsonl", initial_step)
        self._jsonl_path = self.directory / "metrics.jsonl"
        if tensorboard:
            self._tb = ScalarEventWriter(self.directory / "tb")
        self._show = show
        self._start = time.time()
        if total_steps is not None:
            self._bar = tqdm(
                total=total_steps, initial=initial_step, desc=description, dynamic_ncols=True
            )

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Logs scalar `metrics` at `step`; returns them as floats."""
        scalars = to_python_scalars(metrics)
        if not self.enabled:
            return scalars
        record = {"step": int(step), "time": round(time.time() - self._start, 3), **scalars}
        append_line(self._jsonl_path, json.dumps(record, allow_nan=True))
        if self._tb is not None:
            finite = {name: value for name, value in scalars.items() if math.isfinite(value)}
            self._tb.add_scalars(step, finite)
        if self._bar is not None:
            self._bar.update(1)
            if self._show:
                self._bar.set_postfix(
                    {k: f"{scalars[k]:.4g}" for k in self._show if k in scalars}, refresh=False
                )
        return scalars

    def close(self) -> None:
        """Flushes and closes every sink."""
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def append_line(path: Any, line: str) -> None:
    """Appends one line to a text file: in place on a local disk; on an object store (a
    gs:// URI), which has no append, by rewriting the file."""
    path = storage_path(path)
    if str(path).startswith(URI_PREFIXES):
        old = path.read_text() if path.exists() else ""
        path.write_text(old + line + "\n")
        return
    with open(path, "a") as f:
        f.write(line + "\n")


def drop_rows_after(path: str | pathlib.Path, step: int, *, key: str = "step") -> int:
    """Removes the JSONL rows of `path` whose `key` is past `step` (what a run interrupted
    after its last checkpoint logged, and will log again on resume); returns how many went.
    A missing file is left alone."""
    path = storage_path(path)
    if not path.exists():
        return 0
    lines = path.read_text().splitlines(keepends=True)

    def keep(line: str) -> bool:
        try:
            return json.loads(line).get(key, 0) <= step
        except json.JSONDecodeError:  # a row cut short when the run was killed
            return False

    kept = [line for line in lines if line.strip() and keep(line)]
    if len(kept) != len(lines):
        path.write_text("".join(kept))
    return len(lines) - len(kept)


def read_metrics(path: str | pathlib.Path) -> list[dict[str, float]]:
    """Reads a `metrics.jsonl` file (or the run directory holding it) into a list of dicts."""
    path = storage_path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    rows = []
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not valid JSON ({e.msg})") from None
    return rows


def eval_curve(rows: list[dict[str, float]]) -> list[list[float]]:
    """[[step, held-out greedy accuracy], ...] from a run's metrics rows, one per evaluation
    (the last row of a step wins, as after a resume)."""
    by_step = {int(r["step"]): float(r["eval/accuracy"]) for r in rows if "eval/accuracy" in r}
    return [[step, by_step[step]] for step in sorted(by_step)]
