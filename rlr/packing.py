"""Packed rows: the real tokens of many padded rows laid side by side in fewer, full rows.

A training batch in the row layout (rlr.readouts) is [B, S] with S = P + T: every row is padded
to the longest prompt and the longest response, so on a GSM8K-like length mix most of an
update's row-positions are padding. `pack_rows` moves each row's real tokens (attention_mask
1, in order) into one segment of a packed row [R, L] (first fit, longest rows first), with
per-segment positions 0..n-1 (the positions the padded row gives its real tokens) and segment
ids (attention stays within a segment; 0 marks padding). `unpack` maps any per-position result
[R, L, ...] back to [B, S, ...], so losses, masks and metrics keep the row layout and a packed
update computes the padded update's numbers (up to float rounding).

Packing runs on the host (NumPy) between the jitted steps; R is rounded up to a multiple of
`row_multiple`, so an update compiles once per distinct R rather than once per batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import chex
import jax.numpy as jnp
import numpy as np


class PackedRows(NamedTuple):
    """R packed rows of L columns, and where each of the B x S padded columns went."""

    input_ids: chex.Array  # [R, L] int32 (0 on padding)
    positions: chex.Array  # [R, L] int32, each segment's own 0..n-1
    segment_ids: chex.Array  # [R, L] int32, 1.. per segment within a row, 0 on padding
    source: chex.Array  # [B, S] int32, flat index r * L + c of each column (R * L: padding)


def pack_rows(
    input_ids: np.ndarray,  # [B, S]
    attention_mask: np.ndarray,  # [B, S] 1 on real tokens
    *,
    length: int | None = None,  # L (default S: every row fits)
    row_multiple: int = 1,
) -> PackedRows:  # NumPy arrays
    """Packs the real tokens of each row into segments of [R, L] rows, first fit decreasing;
    R is the smallest multiple of `row_multiple` that holds them (at least `row_multiple` rows,
    even when no row has a token)."""
    ids, mask = np.asarray(input_ids), np.asarray(attention_mask) > 0
    chex.assert_rank([ids, mask], 2)
    chex.assert_equal_shape([ids, mask])
    batch, width = ids.shape
    length = width if length is None else length
    counts = mask.sum(1)
    if row_multiple < 1 or counts.max(initial=0) > length:
        raise ValueError(
            f"pack_rows: need row_multiple >= 1 and L={length} >= the longest row "
            f"({counts.max(initial=0)} tokens); got row_multiple={row_multiple}"
        )
    free: list[int] = []  # room left in each packed row
    placed = np.zeros((batch, 2), np.int64)  # (packed row, first column) of each padded row
    for b in np.argsort(-counts, kind="stable"):
        if counts[b] == 0:
            continue
        row = next((r for r, room in enumerate(free) if room >= counts[b]), len(free))
        if row == len(free):
            free.append(length)
        placed[b] = (row, length - free[row])
        free[row] -= counts[b]
    rows = -(-max(1, len(free)) // row_multiple) * row_multiple  # at least one, a multiple
    packed_ids = np.zeros((rows, length), np.int32)
    positions = np.zeros((rows, length), np.int32)
    segments = np.zeros((rows, length), np.int32)
    source = np.full((batch, width), rows * length, np.int32)
    segment_count = np.zeros(rows, np.int32)
    for b in range(batch):
        if counts[b] == 0:
            continue
        row, first = placed[b]
        columns = first + np.arange(counts[b])
        segment_count[row] += 1
        packed_ids[row, columns] = ids[b, mask[b]]
        positions[row, columns] = np.arange(counts[b])
        segments[row, columns] = segment_count[row]
        source[b, mask[b]] = row * length + columns
    return PackedRows(packed_ids, positions, segments, source)


def pack_minibatch(
    input_ids: np.ndarray,  # [B, S]
    attention_mask: np.ndarray,  # [B, S]
    *,
    shards: int = 1,
) -> PackedRows:  # NumPy arrays
    """A training step's rows packed into rows of S columns, R rounded up to a multiple of an
    eighth of B (and of the batch's `shards`): a trainer's step then compiles for at most eight
    packed row counts, and every one splits evenly over the mesh."""
    rows = np.shape(input_ids)[0]
    return pack_rows(input_ids, attention_mask, row_multiple=math.lcm(shards, -(-rows // 8)))


def unpack(
    packed: chex.Array,  # [R, L, ...] a per-position result on packed rows
    source: chex.Array,  # [B, S] PackedRows.source
) -> chex.Array:  # [B, S, ...], 0 on padding columns
    """The padded layout of a packed per-position result (differentiable: a gather)."""
    rows, length = packed.shape[:2]
    flat = packed.reshape(rows * length, *packed.shape[2:])
    return jnp.take(flat, source, axis=0, mode="fill", fill_value=0)


def next_in_segment(packed: PackedRows) -> chex.Array:  # [R, L] int32
    """The token after each position within its segment (0 at a segment's last token): the
    targets a causal LM's logits at each packed position predict."""
    ids, segments = packed.input_ids, packed.segment_ids
    following = jnp.pad(ids[:, 1:], ((0, 0), (0, 1)))
    same = jnp.pad(segments[:, 1:], ((0, 0), (0, 1))) == segments
    return jnp.where(same & (segments > 0), following, 0).astype(jnp.int32)


def packing_ratio(attention_mask: chex.Array, packed: PackedRows) -> float:
    """Padded row-positions over packed ones (B x S / R x L): the update's work saved. Reads
    shapes only, so it takes global arrays sharded across processes too."""
    return math.prod(np.shape(attention_mask)) / math.prod(np.shape(packed.input_ids))
