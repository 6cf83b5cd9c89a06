"""Text -> PPO-layout rows, fixed-shape batch mapping, and a resumable epoch iterator.

Every trainer (SFT, PRM / ORM, PPO) uses the row layout of rlr.readouts: the prompt
LEFT-padded to P, then the response RIGHT-padded to T (EOS included in the response), so that
`input_ids [B, S = P + T]`, `attention_mask [B, S]` and `response_mask [B, T]` mean the same
thing everywhere. Step ends are found from the response token ids with
`rlr.data.segmentation.step_ends_from_ids`, exactly as PPO finds them on sampled responses, so a PRM
label sits on the token that PPO will read the PRM at.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from rlr.data.segmentation import DEFAULT_SEPARATORS, pad_id_of, step_ends, step_ends_from_ids


def encode_prompts(
    tokenizer, prompts: Sequence[str], *, prompt_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # ids [B, P] int32, mask [B, P] int32, cut [B]
    """Prompts left-padded to P; a longer prompt keeps its last P tokens (cut[b] is True)."""
    if prompt_len < 1:
        raise ValueError(f"prompt_len must be >= 1; got {prompt_len}")
    pad = pad_id_of(tokenizer)
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    ids = np.full((len(encoded), prompt_len), pad, np.int32)
    mask = np.zeros((len(encoded), prompt_len), np.int32)
    cut = np.zeros(len(encoded), bool)
    for b, row in enumerate(encoded):
        if not row:
            raise ValueError(f"prompt {b} encodes to no tokens; every row needs a prompt")
        cut[b] = len(row) > prompt_len
        row = row[-prompt_len:]
        ids[b, prompt_len - len(row) :] = row
        mask[b, prompt_len - len(row) :] = 1
    return ids, mask, cut


def prompt_width(
    tokenizer, prompts: Sequence[str], *, limit: int | None = None, minimum: int = 16
) -> int:
    """P for a set of prompts: the next power of two at or above the longest prompt's token
    count (at least `minimum`), at most `limit` (a longer prompt then keeps its last `limit`
    tokens in encode_prompts). Powers of two bound the compiled shapes that prompt sets of
    varying lengths need to log2(limit / minimum) + 1."""
    if not prompts:
        raise ValueError("prompt_width needs at least one prompt")
    if minimum < 1 or (limit is not None and limit < 1):
        raise ValueError(f"need minimum, limit >= 1; got minimum={minimum}, limit={limit}")
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    longest = max(minimum, max(len(ids) for ids in encoded))
    width = 1 << (longest - 1).bit_length()
    return width if limit is None else min(width, limit)


def encode_rows(
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    prompt_len: int,
    response_len: int,
    add_eos: bool = True,
    max_steps: int = 16,
    separators: Sequence[str] = DEFAULT_SEPARATORS,
) -> dict[str, np.ndarray]:
    """Prompt/response pairs as PPO rows, with the response's step ends.

    Returns:
      input_ids [B, P+T] int32: prompt left-padded to P (truncated from the left), response
        right-padded to T (truncated from the right) with EOS appended when `add_eos`.
      attention_mask [B, P+T] int32, response_mask [B, T] float32 (EOS included).
      step_end [B, K] int32, step_mask [B, K] float32: last response token of each step,
        found from the response ids as PPO does; steps cut by truncation are masked out.
      prompt_truncated [B], response_truncated [B] bool: which rows lost tokens.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if response_len < 1:
        raise ValueError(f"response_len must be >= 1; got {response_len}")
    prompt_ids, prompt_mask, prompt_cut = encode_prompts(tokenizer, prompts, prompt_len=prompt_len)
    pad = pad_id_of(tokenizer)
    eos = tokenizer.eos_token_id
    if add_eos and eos is None:
        raise ValueError("add_eos=True needs a tokenizer with an eos_token_id")
    encoded = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    batch = len(encoded)
    response_ids = np.full((batch, response_len), pad, np.int32)
    response_mask = np.zeros((batch, response_len), np.float32)
    response_cut = np.zeros(batch, bool)
    for b, row in enumerate(encoded):
        row = list(row) + ([int(eos)] if add_eos else [])
        response_cut[b] = len(row) > response_len
        row = row[:response_len]
        response_ids[b, : len(row)] = row
        response_mask[b, : len(row)] = 1.0
    try:
        step_end, step_mask, _ = step_ends_from_ids(
            response_ids, response_mask, tokenizer, max_steps=max_steps, separators=separators
        )
    except ValueError as err:
        if "byte-level" not in str(err):
            raise
        # Not a byte-level BPE: fall back to text offsets, which agree for clean tokenizations.
        step_end, step_mask = step_ends(
            list(responses),
            tokenizer,
            max_steps=max_steps,
            max_tokens=response_len,
            separators=separators,
        )
    return {
        "input_ids": np.concatenate([prompt_ids, response_ids], axis=1),
        "attention_mask": np.concatenate([prompt_mask, response_mask.astype(np.int32)], axis=1),
        "response_mask": response_mask,
        "step_end": step_end,
        "step_mask": step_mask,
        "prompt_truncated": prompt_cut,
        "response_truncated": response_cut,
    }


def warn_truncated(rows: dict[str, np.ndarray], source: str, *, prefix: str = "") -> None:
    """Prints a warning naming `source` when encode_rows cut prompts or responses."""
    for part in ("prompt", "response"):
        cut = int(np.sum(rows[f"{part}_truncated"]))
        if cut:
            print(
                f"warning: {cut} of {len(rows[f'{part}_truncated'])} {part}s in {source} were "
                f"truncated; raise {prefix}{part}_len to keep them whole"
            )


def step_targets(
    labels: Sequence[Sequence[float]],  # [B][K_b] per-step targets in [0, 1]
    step_mask: np.ndarray,  # [B, K] from encode_rows
) -> np.ndarray:  # [B, K] float32, 0 on padded / truncated steps
    """Per-step targets laid out like step_mask.

    The number of steps found in each tokenized response must equal the number of labels
    (up to steps lost to truncation or to K); a mismatch means the text was split differently
    from how it was labelled, and is an error.
    """
    step_mask = np.asarray(step_mask)
    if step_mask.ndim != 2 or len(labels) != step_mask.shape[0]:
        raise ValueError(
            f"step_mask must be [B, K] with B = {len(labels)} label rows; got {step_mask.shape}"
        )
    out = np.zeros(step_mask.shape, np.float32)
    for b, row in enumerate(labels):
        found = int(step_mask[b].sum())
        if found > len(row):
            raise ValueError(
                f"row {b}: the response splits into {found} steps but has {len(row)} labels;"
                " steps must be joined with a separator that rlr.data.segmentation splits on"
            )
        for k in range(found):
            value = float(row[k])
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"row {b} step {k}: target must be in [0, 1]; got {value}")
            out[b, k] = value
    return out


def map_in_batches(
    fn: Callable[..., Any],
    arrays: Sequence[np.ndarray],  # each [R, ...], the same R
    *,
    batch_size: int,
    key: jax.Array | None = None,
    progress: Any = None,
) -> Any:  # fn's output pytree, each leaf [R, ...] as NumPy
    """Applies `fn` to fixed-size [batch_size, ...] slices of `arrays` and concatenates.

    The one batching rule of rlr's evaluation, scoring and sampling loops: every call has the
    same shape, so a jitted `fn` compiles once; the last batch is padded by repeating the last
    row and the padded rows are dropped from the output; with `key`, batch c is called as
    `fn(*batch, fold_in(key, c))`, so a result depends on the key and the batch size only.
    `progress` (a tqdm bar or None) advances by the real rows of each batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    arrays = [np.asarray(a) for a in arrays]
    rows = len(arrays[0]) if arrays else 0
    if rows == 0:
        raise ValueError("map_in_batches needs at least one row")
    if any(len(a) != rows for a in arrays):
        raise ValueError(f"arrays differ in rows: {[len(a) for a in arrays]}")
    parts = []
    for chunk, start in enumerate(range(0, rows, batch_size)):
        real = min(batch_size, rows - start)
        index = np.minimum(np.arange(start, start + batch_size), rows - 1)
        args = [a[index] for a in arrays]
        if key is not None:
            args.append(jax.random.fold_in(key, chunk))
        out = jax.device_get(fn(*args))
        parts.append(jax.tree.map(lambda x, n=real: np.asarray(x)[:n], out))
        if progress is not None:
            progress.update(real)
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *parts)


class EpochIterator:
    """Batches of dataset indices, reshuffled every epoch, resumable from `position`.

    Epoch e visits `permutation(size)` drawn from `np.random.default_rng([seed, e])`; a batch
    that runs past the end of an epoch continues into the next one, so every batch has exactly
    `batch_size` indices. `position = {"epoch": e, "index": i}` is the next index to read; a
    new iterator built with the same arguments and that position yields the same batches.
    """

    def __init__(self, size: int, *, batch_size: int, seed: int, epoch: int = 0, index: int = 0):
        if size < 1:
            raise ValueError(f"the dataset is empty (size {size}); give at least one record")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if epoch < 0 or not 0 <= index < size:
            raise ValueError(f"position (epoch={epoch}, index={index}) is outside 0..{size - 1}")
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = epoch
        self.index = index
        self._order = self._permutation(epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    @property
    def position(self) -> dict[str, int]:
        """{"epoch", "index"}: where the next batch starts (JSON-able, for checkpoints)."""
        return {"epoch": int(self.epoch), "index": int(self.index)}

    @classmethod
    def resume(
        cls, size: int, position: dict[str, Any], *, batch_size: int, seed: int
    ) -> EpochIterator:
        """An iterator continuing from a saved `position`."""
        try:
            epoch, index = int(position["epoch"]), int(position["index"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"a data position needs integer 'epoch' and 'index'; got {position!r}"
            ) from None
        return cls(size, batch_size=batch_size, seed=seed, epoch=epoch, index=index)

    def __iter__(self) -> EpochIterator:
        return self

    def __next__(self) -> np.ndarray:  # [B] int64 dataset indices
        out = []
        while len(out) < self.batch_size:
            take = min(self.batch_size - len(out), self.size - self.index)
            out.extend(self._order[self.index : self.index + take])
            self.index += take
            if self.index == self.size:
                self.epoch += 1
                self.index = 0
                self._order = self._permutation(self.epoch)
        return np.asarray(out, np.int64)
