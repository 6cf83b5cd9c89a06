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
      directory: run directory; files go to `directory/metrics.jsonl` and `directory/tb/`.
      total_steps: length of the progress bar (None: no bar).
      tensorboard: also write TensorBoard event files.
      show: keys shown on the progress bar postfix.
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
    ):
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.directory / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.directory / "tb"))
        self._show = show
        self._start = time.time()
        self._bar = None
        if total_steps is not None:
            self._bar = tqdm(
                total=total_steps, initial=initial_step, desc=description, dynamic_ncols=True
            )

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Logs scalar `metrics` at `step`; returns them as floats."""
        scalars = to_python_scalars(metrics)
        record = {"step": int(step), "time": round(time.time() - self._start, 3), **scalars}
        self._jsonl.write(json.dumps(record, allow_nan=True) + "\n")
        if self._tb is not None:
            for name, value in scalars.items():
                if math.isfinite(value):
                    self._tb.add_scalar(name, value, step)
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
        self._jsonl.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_metrics(path: str | pathlib.Path) -> list[dict[str, float]]:
    """Reads a `metrics.jsonl` file (or the run directory holding it) into a list of dicts."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not valid JSON ({e.msg})") from None
    return rows
