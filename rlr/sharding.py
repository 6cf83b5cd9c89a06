"""Device meshes and the one table that maps logical axis names onto them.

Parameters carry logical axis names (`nn.with_logical_partitioning` in rlr.models): "vocab",
"embed", "mlp", "heads", "kv_heads", "norm", "layers" for the leading [L] axis of the
scanned decoder layers' stacked params (replicated: every device holds its share of every
layer), and "lora_rank" for the r axis of low-rank adapters (replicated: an adapter's A
[In, r] and B [r, Out] are split like its kernel's In and Out axes). Activations and
batches use "batch" and "length". `LOGICAL_AXIS_RULES` below is the only place where those
names meet the mesh axes ("data", "fsdp", "tensor"), so changing how a model is sharded is a
one-line edit here.

Init is `eval_shape` -> shardings -> jitted init with `out_shardings`, so no host ever holds a
full unsharded copy of the model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or axes, or None for replicated). Rows are tried in order.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("norm", None),
    ("layers", None),
    ("lora_rank", None),
)


def make_mesh(
    *,
    data: int = -1,
    fsdp: int = 1,
    tensor: int = 1,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh over `devices` (default: all devices).

    One of the sizes may be -1: it takes whatever the others leave. The product of the sizes
    must equal the number of devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    free = [name for name, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ValueError(f"at most one mesh axis may be -1; got {sizes}")
    for name, size in sizes.items():
        if size != -1 and size < 1:
            raise ValueError(f"mesh axis '{name}' must be >= 1 or -1; got {size}")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if len(devices) % fixed:
            raise ValueError(
                f"cannot fill mesh axis '{free[0]}': {len(devices)} devices are not a multiple "
                f"of the other axes' product {fixed} ({sizes})"
            )
        sizes[free[0]] = len(devices) // fixed
    shape = tuple(sizes[name] for name in MESH_AXES)
    if math.prod(shape) != len(devices):
        raise ValueError(
            f"mesh data={shape[0]} x fsdp={shape[1]} x tensor={shape[2]} needs "
            f"{math.prod(shape)} devices; {len(devices)} are available"
        )
    try:
        # jax.make_mesh orders devices for the physical topology (ICI rings on TPU).
        # Auto axes: XLA propagates shardings through the step (explicit axes would
        # demand an out_sharding on every contraction over a sharded dimension).
        auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
        return jax.make_mesh(shape, MESH_AXES, devices=devices, axis_types=auto)
    except (AssertionError, ValueError, NotImplementedError, TypeError):
        return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def axis_rules(rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES):
    """Context manager making `rules` active for `nn.with_logical_constraint` inside models."""
    return nn.logical_axis_rules(rules)


def logical_to_sharding(
    logical_specs: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES
) -> Any:
    """Maps a pytree of logical PartitionSpecs to NamedShardings on `mesh`."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def param_shardings(
    abstract_boxed_params: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES
) -> Any:
    """NamedShardings for the *unboxed* params, from an eval_shape of the boxed init output."""
    return logical_to_sharding(nn.get_partition_spec(abstract_boxed_params), mesh, rules)


def module_param_shardings(
    module: nn.Module, mesh: Mesh, rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES
) -> Any:
    """NamedShardings of a Flax module's unboxed params (from its logical axis names), found
    by eval_shape of its init on a [1, 4] int32 input: nothing is allocated."""
    import jax.numpy as jnp

    boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
    return param_shardings(boxed["params"], mesh, rules)


def sharded_init(
    init_fn: Callable[..., Any],
    mesh: Mesh,
    *args: Any,
    rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES,
) -> tuple[Any, Any]:
    """Runs `init_fn(*args)` (returning boxed Flax variables) directly into sharded memory.

    Returns (unboxed variables laid out on `mesh`, their NamedShardings). The full model is
    never materialised on one device: eval_shape gives the shapes, the rules give the
    shardings, and the jitted init writes each shard where it belongs.
    """
    abstract = jax.eval_shape(init_fn, *args)
    shardings = param_shardings(abstract, mesh, rules)
    init = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)
    with jax.set_mesh(mesh):
        variables = init(*args)
    return variables, shardings


def replicated(mesh: Mesh) -> NamedSharding:
    """A sharding that puts a full copy on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Shards the leading (batch) axis of an `ndim`-rank array over ("data", "fsdp")."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))


def optimizer_shardings(
    tx: optax.GradientTransformation, params: Any, shardings: Any, mesh: Mesh
) -> Any:
    """Shardings for `tx.init(params)`: every subtree shaped like the params (or like one
    top-level entry of a dict of networks) follows their shardings; everything else (step
    counts, scalars) is replicated."""
    abstract_state = jax.eval_shape(tx.init, params)
    candidates = {jax.tree.structure(params): shardings}
    if isinstance(params, dict):
        for name, sub in params.items():
            candidates.setdefault(jax.tree.structure(sub), shardings[name])

    def is_param_tree(node: Any) -> bool:
        if isinstance(node, jax.ShapeDtypeStruct):
            return False
        return jax.tree.structure(node) in candidates

    return jax.tree.map(
        lambda node: (
            candidates[jax.tree.structure(node)] if is_param_tree(node) else replicated(mesh)
        ),
        abstract_state,
        is_leaf=is_param_tree,
    )


def maybe_initialize_distributed() -> bool:
    """Calls `jax.distributed.initialize()` when this looks like a multi-process launch.

    TPU pod slices (TPU_WORKER_HOSTNAMES with more than one host) and explicit coordinator
    settings (JAX_COORDINATOR_ADDRESS, or RLR_COORDINATOR_ADDRESS with RLR_NUM_PROCESSES and
    RLR_PROCESS_ID as set by launch/gpu.sh) start the distributed runtime; a single host does
    nothing. Returns whether it initialised; a second call (rlr reproduce runs several
    commands in one process) does nothing.
    """
    if jax.distributed.is_initialized():
        return False
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hosts:
        jax.distributed.initialize()
        return True
    if os.environ.get("RLR_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(
            coordinator_address=os.environ["RLR_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["RLR_NUM_PROCESSES"]),
            process_id=int(os.environ["RLR_PROCESS_ID"]),
        )
        return True
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize()
        return True
    return False
