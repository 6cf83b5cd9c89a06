"""The multi-process contract: the same program on every host, one mesh over all devices.

A run started N times (RLR_COORDINATOR_ADDRESS, RLR_NUM_PROCESSES, RLR_PROCESS_ID; or the
TPU metadata) forms one mesh (rlr.sharding.maybe_initialize_distributed). Rows of a batch are
split over the mesh's batch axes, so each process owns a contiguous block of global rows
(`process_rows`): it encodes, samples, grades and scores only those, and the global arrays
are assembled from the blocks (`global_rows`). Host-side statistics are gathered
(`gather_rows`); process 0 alone writes files (`is_main`); a decision such as "stop and save"
is taken together (`any_process`); a packed update's rows are packed by the process that holds
them, into one packed row count (`packed_rows`). With one process every helper is the
identity, so the single-host path is the same code.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from rlr import sharding
from rlr.packing import PackedRows, pack_minibatch


def is_main() -> bool:
    """Whether this process writes the run's files (metrics, samples, configs, exports)."""
    return jax.process_index() == 0


def multi_process_launch() -> str | None:
    """Why this process is one of several of a run (the variable a launcher set, or the
    running runtime), or None for a single process. The launchers: launch/local_multiprocess.sh
    and launch/gpu.sh (RLR_NUM_PROCESSES), a TPU pod slice (TPU_WORKER_HOSTNAMES naming more
    than one host; launch/tpu_pod.sh), JAX's own (JAX_COORDINATOR_ADDRESS); the same
    variables rlr.sharding.maybe_initialize_distributed joins the runtime by."""
    processes = os.environ.get("RLR_NUM_PROCESSES", "1")
    if os.environ.get("RLR_COORDINATOR_ADDRESS") and processes != "1":
        return f"RLR_NUM_PROCESSES={processes}"
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hosts:
        return f"TPU_WORKER_HOSTNAMES lists {len(hosts.split(','))} hosts"
    if os.environ.get("JAX_COORDINATOR_ADDRESS") and os.environ.get("JAX_NUM_PROCESSES") != "1":
        return f"JAX_COORDINATOR_ADDRESS={os.environ['JAX_COORDINATOR_ADDRESS']}"
    if jax.distributed.is_initialized() and jax.process_count() > 1:
        return f"jax.process_count()={jax.process_count()}"
    return None


def require_one_process(command: str, *, writes: str) -> None:
    """Refuses to run `rlr COMMAND` as one of several processes: a command that neither joins
    the runtime nor splits its work would run N times over and race on `writes` (its output
    flag). Raises ValueError naming the command, the flag and the launch variable."""
    why = multi_process_launch()
    if why is not None:
        raise ValueError(
            f"rlr {command} runs as a single process, but this one was started as one of "
            f"several ({why}): every copy would do the same work and write the same {writes}. "
            "Run it once, without launch/local_multiprocess.sh, launch/gpu.sh's several-node "
            "variables or launch/tpu_pod.sh"
        )


def process_rows(mesh: Any, rows: int, *, what: str = "the batch") -> slice:
    """The contiguous block of `rows` global rows this process holds of a batch-sharded
    array on `mesh` (all of them with one process). Raises, naming `what`, when rows do not
    split evenly over the batch shards, or when a process's block is not contiguous."""
    batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if rows % batch_shards:
        raise ValueError(
            f"{what} ({rows} rows) does not split over the mesh's {batch_shards} batch shards "
            "(data x fsdp): make it a multiple of that"
        )
    if jax.process_count() == 1:
        return slice(0, rows)
    spec = sharding.batch_sharding(mesh, 1)
    starts = sorted(
        {index[0].start or 0 for index in spec.addressable_devices_indices_map((rows,)).values()}
    )
    size = rows // batch_shards
    first, last = starts[0], starts[-1] + size
    if last - first != size * len(starts):
        raise ValueError(
            "this process's rows are not one contiguous block; build the mesh from "
            "jax.devices() in order (rlr.sharding.make_mesh does)"
        )
    return slice(first, last)


def global_rows(mesh: Any, local: np.ndarray, rows: int) -> jax.Array:
    """A batch-sharded global [rows, ...] array from this process's block `local`."""
    local = np.asarray(local)
    spec = sharding.batch_sharding(mesh, local.ndim)
    if jax.process_count() == 1:
        return jax.device_put(local, spec)
    return jax.make_array_from_process_local_data(spec, local, (rows, *local.shape[1:]))


def local_rows(mesh: Any, array: jax.Array) -> np.ndarray:
    """This process's block of a global [rows, ...] array, as NumPy (`process_rows`)."""
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(array))
    spec = sharding.batch_sharding(mesh, array.ndim)
    if array.sharding != spec:
        array = jax.jit(lambda x: x, out_shardings=spec)(array)
    local = multihost_utils.global_array_to_host_local_array(array, mesh, spec.spec)
    return np.asarray(local)


def packed_rows(
    mesh: Any,
    input_ids: np.ndarray,  # [B_local, S] this process's block of the batch
    attention_mask: np.ndarray,  # [B_local, S]
    rows: int,  # B, the batch's global row count
) -> PackedRows:  # global, batch-sharded: [R, L] arrays and source [B, S]
    """The batch's rows packed for a packed update (rlr.packing.pack_minibatch), each process
    packing only its own block: every block is padded to the most packed rows any process
    needs (so R splits evenly and each process's packed rows are its block of them), and
    `source` points into the global [R, L] layout (R * L on padding columns)."""
    batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    block = process_rows(mesh, rows)
    held = block.stop - block.start
    packed = pack_minibatch(input_ids, attention_mask, shards=batch_shards * held // rows)
    count, length = packed.input_ids.shape
    most = int(gather_rows(np.asarray([count])).max())
    total = most * rows // held  # R
    first = process_rows(mesh, total, what="the packed rows").start
    real = packed.source < count * length
    source = np.where(real, packed.source + first * length, total * length).astype(np.int32)
    pad = ((0, most - count), (0, 0))
    grids = (np.pad(grid, pad) for grid in packed[:3])  # ids, positions, segment ids: 0 pads
    return PackedRows(*(global_rows(mesh, grid, total) for grid in grids),
                      global_rows(mesh, source, rows))  # fmt: skip


def concatenate_rows(mesh: Any, chunks: list[jax.Array]) -> jax.Array:
    """Chunks of batch-sharded rows ([B_i, ...] each) joined on the mesh in order, [sum B_i,
    ...] (rows move between devices as needed; nothing goes through a host). A single chunk
    comes back as it is."""
    if len(chunks) == 1:
        return chunks[0]
    spec = sharding.batch_sharding(mesh, chunks[0].ndim)
    return jax.jit(lambda *xs: jnp.concatenate(xs), out_shardings=spec)(*chunks)


def gather_rows(local: np.ndarray) -> np.ndarray:
    """Every process's block of rows, concatenated in process order (as global rows)."""
    local = np.asarray(local)
    if jax.process_count() == 1:
        return local
    return np.asarray(multihost_utils.process_allgather(local, tiled=True))


def any_process(flag: bool) -> bool:
    """True when `flag` is true on any process (every process must call it)."""
    if jax.process_count() == 1:
        return bool(flag)
    flags = multihost_utils.process_allgather(np.asarray([bool(flag)], np.int32), tiled=True)
    return bool(np.any(flags))


def fetch(tree: Any) -> Any:
    """A pytree of (possibly sharded across hosts) arrays as host NumPy arrays, on every
    process: jax.device_get where a process can address all shards, a gather otherwise."""

    def one(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(jax.device_get(leaf))

    return jax.tree.map(one, tree)


def sync(name: str) -> None:
    """Waits until every process reaches `name` (a no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
