"""The supervised training loop that SFT and reward-model training share.

`fit` runs any `loss_fn(params, batch) -> (loss, aux)` with the jitted, donated step of
rlr.training.train_state over batches drawn by an EpochIterator, with orbax checkpoints
that hold the data position (an interrupted run resumed with the same arguments ends bitwise
equal to an uninterrupted one), metrics to JSONL / TensorBoard with a progress bar, periodic
evaluation, and SIGTERM -> checkpoint -> clean return.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlr.packing import pack_minibatch
from rlr.training import batching, distributed, loading
from rlr.training.checkpoint import Checkpointer, run_directory
from rlr.training.metrics import MetricsWriter
from rlr.training.preemption import PreemptionGuard
from rlr.training.schemas import SupervisedSpec
from rlr.training.train_state import (
    TrainState,
    make_optimizer,
    make_train_step,
    train_state_shardings,
)


@dataclasses.dataclass
class FitResult:
    """What `fit` ends with: the state, whether it stopped on SIGTERM, the last metrics."""

    state: TrainState
    iteration: int
    interrupted: bool
    metrics: dict[str, float]
    wall_s: float


def fit(
    state: TrainState,
    loss_fn: Callable[[Any, Any], tuple[jax.Array, dict[str, jax.Array]]],
    tx: optax.GradientTransformation,
    *,
    make_batch: Callable[[np.ndarray], dict[str, np.ndarray]],
    dataset_size: int,
    spec: SupervisedSpec,
    seed: int,
    out_dir: Any,
    evaluate: Callable[[Any], dict[str, float]] | None = None,
    eval_every: int = 0,
    description: str = "train",
    show: Sequence[str] = ("loss",),
    train_step: Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]] | None = None,
    mesh: Any = None,
    param_shardings: Any = None,
) -> FitResult:
    """Runs `spec.steps` updates of `loss_fn`, resuming from `out_dir/checkpoints` if present.

    Batches are `make_batch(indices)` for index batches of an EpochIterator (seeded by `seed`);
    the checkpoint holds the TrainState and the data position, so an interrupted run resumed
    with the same arguments ends with the same parameters as an uninterrupted one. `evaluate`
    (params -> metrics) runs every `eval_every` steps (0: never mid-run) and after the last
    step; its metrics are logged with an "eval/" prefix. SIGTERM saves and returns early with
    `interrupted=True`. `train_step` replaces `make_train_step(loss_fn, tx)` (e.g. a step
    jitted with shardings, or one compiled once and shared by several runs).

    With `mesh` (and the parameters' `param_shardings`), the state lives on the mesh, the
    step is jitted with those shardings, and each process builds only its block of every
    batch (rlr.training.distributed): N processes train exactly like one. Process 0 alone
    writes the metrics; every process takes part in the checkpoints. `out_dir` is a local
    path or a URI (rlr.training.checkpoint.run_directory).
    """
    out_dir = run_directory(out_dir)
    state, train_step, device_batch = _step_and_batches(
        state, loss_fn, tx, train_step, make_batch, spec, mesh, param_shardings
    )
    checkpointer = Checkpointer(out_dir / "checkpoints", keep=spec.keep_checkpoints)
    state, iteration, iterator = _resume(checkpointer, state, dataset_size, spec.batch_size, seed)

    def save() -> None:
        checkpointer.save(iteration, state, {"iteration": iteration, "data": iterator.position})

    start = time.time()
    scalars: dict[str, float] = {}
    interrupted = False
    writer = MetricsWriter(
        out_dir,
        total_steps=spec.steps,
        initial_step=iteration,
        show=tuple(show),
        description=description,
        enabled=distributed.is_main(),
    )
    try:
        with PreemptionGuard() as guard:
            while iteration < spec.steps:
                state, metrics = train_step(state, device_batch(next(iterator)))
                iteration += 1
                last = iteration == spec.steps
                if evaluate is not None and (last or (eval_every and iteration % eval_every == 0)):
                    metrics = {**metrics, **eval_prefixed(evaluate(state.params))}
                scalars = writer.write(iteration, metrics)
                stop = distributed.any_process(guard.requested)  # together, or not at all
                if last or iteration % spec.checkpoint_every == 0 or stop:
                    save()
                if stop and not last:
                    interrupted = True
                    print(f"\nsignal {guard.received}: saved step {iteration}; exiting")
                    break
    finally:
        writer.close()
        checkpointer.close()
    return FitResult(state, iteration, interrupted, scalars, time.time() - start)


def _step_and_batches(
    state: TrainState,
    loss_fn: Callable[[Any, Any], tuple[jax.Array, dict[str, jax.Array]]],
    tx: optax.GradientTransformation,
    train_step: Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]] | None,
    make_batch: Callable[[np.ndarray], dict[str, np.ndarray]],
    spec: SupervisedSpec,
    mesh: Any,
    param_shardings: Any,
) -> tuple[TrainState, Callable[..., Any], Callable[[np.ndarray], Any]]:
    """fit's state, train step and index batch -> device batch. Without a mesh: the state as
    it is, `train_step` or make_train_step(loss_fn, tx), and the batch as jax arrays. With
    one: the state moved to its shardings, the step jitted with them (unless given), and each
    process building only its block of the rows of every batch (rlr.training.distributed).
    With spec.pack, every batch also holds its rows packed, under "packing"."""
    batch_size = spec.batch_size
    if mesh is None:
        step = train_step or make_train_step(loss_fn, tx)

        def host_batch(indices: np.ndarray) -> Any:
            batch = make_batch(indices)
            if spec.pack:
                batch["packing"] = pack_minibatch(batch["input_ids"], batch["attention_mask"])
            return jax.tree.map(jnp.asarray, batch)

        return state, step, host_batch
    state_shardings = train_state_shardings(tx, state.params, param_shardings, mesh)
    state = jax.jit(lambda s: s, out_shardings=state_shardings)(state)
    train_step = train_step or make_train_step(
        loss_fn, tx, state_sharding=state_shardings, batch_sharding=None
    )
    batch_rows = distributed.process_rows(mesh, batch_size, what="train.batch_size")

    def device_batch(indices: np.ndarray) -> Any:
        local = make_batch(indices[batch_rows])
        batch = {k: distributed.global_rows(mesh, v, batch_size) for k, v in local.items()}
        if spec.pack:  # each process packs its own block of the rows
            ids, mask = local["input_ids"], local["attention_mask"]
            batch["packing"] = distributed.packed_rows(mesh, ids, mask, batch_size)
        return batch

    return state, train_step, device_batch


def _resume(
    checkpointer: Checkpointer, state: TrainState, dataset_size: int, batch_size: int, seed: int
) -> tuple[TrainState, int, batching.EpochIterator]:
    """The state, step count and data position to start from: the latest checkpoint's when
    there is one, else `state`, 0 and a fresh EpochIterator seeded by `seed`."""
    if checkpointer.latest_step() is None:
        iterator = batching.EpochIterator(dataset_size, batch_size=batch_size, seed=seed)
        return state, 0, iterator
    state, meta = checkpointer.restore(state)
    iteration = int(meta["iteration"])
    iterator = batching.EpochIterator.resume(
        dataset_size, meta["data"], batch_size=batch_size, seed=seed
    )
    if distributed.is_main():
        print(f"resumed from {checkpointer.directory} at step {iteration}")
    return state, iteration, iterator


def supervised_mesh(batch_size: int) -> Any:
    """The mesh of SFT and reward-model training: devices on the data axis (each process
    joins the distributed runtime first when started as one of N). One process uses the
    largest number of its devices that splits `batch_size` evenly; N processes use every
    device, and batch_size must split over them."""
    from rlr import sharding

    sharding.maybe_initialize_distributed()
    devices = jax.devices()
    if jax.process_count() == 1:
        used = max(n for n in range(1, len(devices) + 1) if batch_size % n == 0)
        return sharding.make_mesh(devices=devices[:used])
    if batch_size % len(devices):
        raise ValueError(
            f"train.batch_size={batch_size} must be a multiple of the {len(devices)} devices "
            f"of this {jax.process_count()}-process run"
        )
    return sharding.make_mesh()


def eval_prefixed(metrics: dict[str, Any]) -> dict[str, Any]:
    """Evaluation metrics as they are logged: every key prefixed with "eval/"."""
    return {f"eval/{k}": v for k, v in metrics.items()}


def supervised_optimizer(spec: SupervisedSpec) -> optax.GradientTransformation:
    """AdamW of a supervised run: warm-up, cosine decay over `spec.steps`, norm clipping."""
    return make_optimizer(
        learning_rate=spec.learning_rate,
        weight_decay=spec.weight_decay,
        warmup_steps=spec.warmup_steps,
        total_steps=spec.steps,
        max_grad_norm=spec.max_grad_norm,
    )


def export_and_summarize(
    result: FitResult,
    model: Any,
    out_dir: Any,
    *,
    tokenizer_dir: str | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The end of a supervised run: unless it was interrupted, export the trained model (with
    the tokenizer) to out_dir/model and write out_dir/summary.json; returns the summary."""
    summary: dict[str, Any] = {"step": result.iteration, "interrupted": result.interrupted}
    if result.interrupted:
        return summary
    out_dir = run_directory(out_dir)
    export = loading.export_model(
        model, result.state.params, out_dir / "model", tokenizer_dir=tokenizer_dir
    )
    summary.update(
        {
            "model_dir": str(export),
            "wall_s": round(result.wall_s, 1),
            "train_loss": result.metrics.get("loss"),
            **extra,
        }
    )
    if distributed.is_main():
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
