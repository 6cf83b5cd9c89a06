"""Orbax checkpoints of a whole training state, with exact resume and NaN refusal.

A checkpoint holds an arbitrary pytree of arrays (params, optimizer state, critic, step, RNG
key data) plus a JSON dict (data position, config name, anything host-side). Saves are async
and the manager keeps the last `keep` steps. A state with a non-finite floating value is never
written: `save` raises instead, so a resumed run can never start from NaNs.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

URI_PREFIXES = ("gs://", "s3://", "az://", "hf://")


def storage_path(path: str | pathlib.Path) -> epath.Path:
    """Where a run writes: a URI (gs://bucket/run, s3://...) stays that URI, an epath whose
    reads and writes go to that store; a local path is made absolute."""
    if str(path).startswith(URI_PREFIXES):
        return epath.Path(str(path))
    return epath.Path(pathlib.Path(path).absolute())


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")


def run_directory(value: Any, *, field: str = "out_dir", uri: bool = True) -> epath.Path:
    """The run directory of a command (sft, train-prm, train-orm, ppo, reproduce): the one
    place where `out_dir` (or a flag naming a directory) becomes the path every file of the
    run is written under.

    A URI (gs://bucket/run, s3://..., az://..., hf://...) stays that URI: an etils.epath
    Path whose reads and writes go to that store, never a local folder named `gs:`. A local
    path is made absolute. `uri=False` refuses URIs (a command whose later stages read back
    what it wrote through local-only readers). Raises ValueError naming `field` for an empty
    value, a URI rlr cannot write (another scheme, or `gs:/bucket` with one slash) or a
    refused URI."""
    text = str(value).strip() if value is not None else ""
    if not text:
        raise ValueError(f"{field} is empty: give a local folder or a URI such as gs://bucket/run")
    scheme = _SCHEME.match(text)
    if scheme and not text.startswith(URI_PREFIXES):
        raise ValueError(
            f"{field}={text!r}: rlr writes run directories to a local folder or a URI "
            f"starting {', '.join(URI_PREFIXES)}; {scheme.group(1)}:/ is neither"
        )
    if text.startswith(URI_PREFIXES) and not uri:
        raise ValueError(
            f"{field}={text!r}: this command needs a local folder (its later stages read "
            "what it writes with local-only readers); write locally and copy it to the "
            "bucket afterwards"
        )
    return storage_path(text)


class NonFiniteStateError(RuntimeError):
    """Raised instead of writing a checkpoint that contains NaN or Inf."""


def first_non_finite_path(tree: Any) -> str | None:
    """The key path of the first floating leaf holding NaN/Inf, or None if all are finite."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    flags = [
        (path, jax.numpy.all(jax.numpy.isfinite(leaf)))
        for path, leaf in leaves
        if hasattr(leaf, "dtype") and jax.numpy.issubdtype(leaf.dtype, jax.numpy.inexact)
    ]
    for path, ok in flags:
        if not bool(ok):
            return jax.tree_util.keystr(path)
    return None


class Checkpointer:
    """Saves and restores `(state, meta)` under `directory/<step>/`.

    Every process of a multi-process run constructs one and takes part in each save and
    restore (orbax writes each process's shards).

    Args:
      directory: where checkpoints live (created if missing): a local path or a URI.
      keep: how many of the latest checkpoints to keep.
      async_save: write in a background thread; `wait()` or `close()` to finish.
    """

    def __init__(self, directory: str | pathlib.Path, *, keep: int = 2, async_save: bool = True):
        if keep < 1:
            raise ValueError(f"keep must be >= 1; got {keep}")
        self.directory = storage_path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def save(self, step: int, state: Any, meta: dict[str, Any] | None = None) -> None:
        """Writes `state` (a pytree of arrays) and `meta` (JSON-able) as checkpoint `step`."""
        bad = first_non_finite_path(state)
        if bad is not None:
            raise NonFiniteStateError(
                f"refusing to checkpoint step {step}: state{bad} holds NaN or Inf"
            )
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta or {}))
            ),
        )

    def latest_step(self) -> int | None:
        """The newest finished checkpoint's step, or None when there is none."""
        return self._manager.latest_step()

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restores (state, meta) at `step` (default latest) into the structure of `target`.

        `target` is a pytree of arrays or `jax.ShapeDtypeStruct`s (with shardings, if the
        state should land sharded); restored leaves take its shapes, dtypes and shardings.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(_as_abstract, target)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], dict(restored["meta"] or {})

    def wait(self) -> None:
        """Blocks until any async save has been written."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _as_abstract(leaf: Any) -> Any:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return leaf
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    array = np.asarray(leaf)
    return jax.ShapeDtypeStruct(array.shape, array.dtype)
