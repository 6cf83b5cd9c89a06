"""A generic jitted, donated train step that skips non-finite updates.

SFT, reward-model training and PPO differ only in their loss; they share this step. The loss
function takes `(params, batch)` and returns `(loss, aux_metrics)`. When the loss or the
gradient norm is not finite, the parameters and optimizer state are left unchanged and the
skip is counted in the state, so one bad batch never poisons a run or a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class TrainState(NamedTuple):
    """Everything a train step updates. A pytree, so it checkpoints and shards as one."""

    params: Any
    opt_state: Any
    step: jax.Array  # [] int32, updates applied
    skipped: jax.Array  # [] int32, updates skipped for non-finite loss or gradients


def init_train_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
    """A fresh TrainState for `params` under optimizer `tx`."""
    return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def make_optimizer(
    *,
    learning_rate: float,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    max_grad_norm: float | None = 1.0,
    b1: float = 0.9,
    b2: float = 0.95,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """AdamW with optional global-norm clipping, linear warm-up and cosine decay to 10%."""
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0; got {learning_rate}")
    if total_steps is not None and total_steps > warmup_steps:
        schedule = optax.warmup_cosine_decay_schedule(
            0.0 if warmup_steps else learning_rate,
            learning_rate,
            warmup_steps,
            total_steps,
            end_value=0.1 * learning_rate,
        )
    elif warmup_steps:
        schedule = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    else:
        schedule = learning_rate
    parts = []
    if max_grad_norm is not None:
        parts.append(optax.clip_by_global_norm(max_grad_norm))
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    return optax.chain(*parts)


def _select(flag: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.where(flag, n, o), new, old)


def apply_gradients(
    state: TrainState, grads: Any, loss: jax.Array, tx: optax.GradientTransformation
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update, skipped (and counted) when `loss` or `grads` are not finite."""
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = TrainState(
        params=_select(finite, params, state.params),
        opt_state=_select(finite, opt_state, state.opt_state),
        step=state.step + finite.astype(jnp.int32),
        skipped=state.skipped + (~finite).astype(jnp.int32),
    )
    return new_state, {"grad_norm": grad_norm, "update_skipped": (~finite).astype(jnp.float32)}


def make_train_step(
    loss_fn: Callable[[Any, Any], tuple[jax.Array, dict[str, jax.Array]]],
    tx: optax.GradientTransformation,
    *,
    state_sharding: Any = None,
    batch_sharding: Any = None,
    donate: bool = True,
) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]]:
    """Jits `state, batch -> (state, metrics)` for `loss_fn(params, batch) -> (loss, aux)`.

    The state is donated (its buffers are reused for the new state). Pass shardings from
    rlr.sharding to pin the layout on a mesh; None lets jit infer them.
    """

    def train_step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        state, update_metrics = apply_gradients(state, grads, loss, tx)
        return state, {"loss": loss, **aux, **update_metrics}

    kwargs: dict[str, Any] = {"donate_argnums": (0,) if donate else ()}
    if state_sharding is not None:
        kwargs["in_shardings"] = (state_sharding, batch_sharding)
        kwargs["out_shardings"] = (state_sharding, None)
    return jax.jit(train_step, **kwargs)


def train_state_shardings(
    tx: optax.GradientTransformation, params: Any, param_shardings: Any, mesh: Any
) -> TrainState:
    """NamedShardings for a whole TrainState on `mesh`: params and optimizer moments follow
    the parameter shardings, the counters are replicated."""
    from rlr import sharding

    return TrainState(
        params=param_shardings,
        opt_state=sharding.optimizer_shardings(tx, params, param_shardings, mesh),
        step=sharding.replicated(mesh),
        skipped=sharding.replicated(mesh),
    )
