"""Step segmentation: text steps -> character spans -> the token that ends each step.

A response is split into steps on the first separator (default "\\n\\n", then "\\n") that gives
more than one non-blank segment; the last segment, holding the final answer, is step K. A step's
reward token is the last token whose character span overlaps the step's (whitespace-trimmed)
characters. Produces the `step_end [B, K]` / `step_mask [B, K]` arrays of docs/design.md section 2.
"""

from __future__ import annotations

import codecs
import functools
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_SEPARATORS = ("\n\n", "\n")
DEFAULT_STEP_TAG = "<|step|>"


def split_steps(
    text: str, *, separators: Sequence[str] = DEFAULT_SEPARATORS
) -> list[tuple[int, int]]:
    """Character spans [start, end) of the steps of `text`, whitespace trimmed, in order.

    Splits on the first separator that yields more than one non-blank segment; blank segments
    are dropped. Text with no such separator is one step; blank text has no steps.
    """
    for separator in separators:
        if not separator:
            raise ValueError("split_steps: separators must be non-empty strings")
    for separator in separators:
        spans = _segments(text, separator)
        if len(spans) > 1:
            return spans
    return _segments(text, None)


def _segments(text: str, separator: str | None) -> list[tuple[int, int]]:
    pieces = [text] if separator is None else text.split(separator)
    spans = []
    position = 0
    for piece in pieces:
        stripped = piece.strip()
        if stripped:
            start = position + (len(piece) - len(piece.lstrip()))
            spans.append((start, start + len(stripped)))
        position += len(piece) + (len(separator) if separator is not None else 0)
    return spans


def step_texts(text: str, *, separators: Sequence[str] = DEFAULT_SEPARATORS) -> list[str]:
    """The steps of `text` as strings (see `split_steps`)."""
    return [text[a:b] for a, b in split_steps(text, separators=separators)]


def last_token_of_spans(
    char_spans: Sequence[tuple[int, int]],  # [K] step character spans, in order
    token_offsets: Sequence[tuple[int, int]],  # [T] token character spans
) -> list[int]:  # [K] index of each step's last token, -1 where no token overlaps
    """Index of the last token overlapping each character span (one merge pass, O(K + T)).

    A token overlaps [a, b) when its span [s, e) is non-empty and s < b and e > a, so a token
    straddling a step boundary ends the earlier step, and empty-span tokens (special tokens, the
    leading bytes of a multibyte character) end no step.
    """
    out = []
    t = 0
    for a, b in char_spans:
        last = -1
        while t < len(token_offsets) and token_offsets[t][0] < b:
            s, e = token_offsets[t]
            if e > s and e > a:
                last = t
            t += 1
        if last >= 0:
            # The step's last token may straddle into the next step: let that step see it too.
            t = last
        out.append(last)
    return out


def _fill(
    ends_per_row: list[list[int]], *, max_steps: int, max_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    step_end = np.zeros((len(ends_per_row), max_steps), np.int32)
    step_mask = np.zeros((len(ends_per_row), max_steps), np.float32)
    for b, ends in enumerate(ends_per_row):
        for k, end in enumerate(ends[:max_steps]):
            if end < 0 or end >= max_tokens:
                break  # the step is cut by truncation; it and every later step are dropped
            step_end[b, k] = end
            step_mask[b, k] = 1.0
    return step_end, step_mask


def _check_sizes(max_steps: int, max_tokens: int) -> None:
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1; got {max_steps}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1; got {max_tokens}")


def step_ends(
    responses: Sequence[str],
    tokenizer,
    *,
    max_steps: int,
    max_tokens: int,
    separators: Sequence[str] = DEFAULT_SEPARATORS,
) -> tuple[np.ndarray, np.ndarray]:  # step_end [B, K] int32, step_mask [B, K] float32
    """Last-token index of each step for responses tokenized as text (no special tokens).

    `tokenizer` is a fast HF tokenizer (offsets needed). Responses are tokenized without special
    tokens and truncated to T = max_tokens; a step whose last token lies beyond T, and every
    step after it or beyond K = max_steps, is masked out. Padding entries of step_end are 0.
    """
    _check_sizes(max_steps, max_tokens)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "step_ends needs a fast tokenizer (return_offsets_mapping); got a slow one"
        )
    encoded = tokenizer(
        list(responses), add_special_tokens=False, return_offsets_mapping=True, truncation=False
    )
    rows = []
    for text, offsets in zip(responses, encoded["offset_mapping"]):
        spans = split_steps(text, separators=separators)
        rows.append(last_token_of_spans(spans, [tuple(o) for o in offsets]))
    return _fill(rows, max_steps=max_steps, max_tokens=max_tokens)


@functools.lru_cache(maxsize=8)
def token_byte_table(tokenizer) -> tuple[list[bytes], frozenset[int]]:
    """For a byte-level BPE tokenizer: the bytes of every token id and the special token ids.

    Special and other added tokens decode to nothing, as with skip_special_tokens=True.
    """
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    decoder = spec.get("decoder") or {}
    kinds = {decoder.get("type")} | {d.get("type") for d in decoder.get("decoders", []) or []}
    if "ByteLevel" not in kinds:
        raise ValueError(
            "token ids can only be mapped to text offsets for byte-level BPE tokenizers (GPT-2 /"
            f" Qwen2 style); this tokenizer's decoder is {decoder.get('type')!r}. Decode the ids"
            " to text and use step_ends instead."
        )
    byte_of_char = {c: b for b, c in _bytes_to_unicode().items()}
    vocab_size = len(tokenizer)
    table = [b""] * vocab_size
    for token, index in tokenizer.get_vocab().items():
        if index < vocab_size:
            table[index] = bytes(byte_of_char[c] for c in token if c in byte_of_char)
    special = frozenset(tokenizer.all_special_ids) | frozenset(
        int(i) for i in tokenizer.added_tokens_decoder
    )
    for index in special:
        if index < vocab_size:
            table[index] = b""
    return table, special


@functools.lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def decode_with_offsets(
    token_ids: Sequence[int], tokenizer
) -> tuple[str, list[tuple[int, int]]]:  # text, [T] character span of each token
    """Decode ids of a byte-level BPE tokenizer to text plus each token's character span.

    A character is credited to the token that completes its UTF-8 bytes, so a token holding only
    the first bytes of a multibyte character gets an empty span. Special tokens decode to "".
    Invalid UTF-8 becomes U+FFFD, as in `tokenizer.decode`.
    """
    table, _ = token_byte_table(tokenizer)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    parts = []
    offsets = []
    position = 0
    for index in token_ids:
        index = int(index)
        if not 0 <= index < len(table):
            raise ValueError(f"token id {index} is outside the vocabulary (size {len(table)})")
        piece = decoder.decode(table[index])
        parts.append(piece)
        offsets.append((position, position + len(piece)))
        position += len(piece)
    tail = decoder.decode(b"", final=True)
    if tail:
        parts.append(tail)
        offsets[-1] = (offsets[-1][0], position + len(tail))
    return "".join(parts), offsets


def step_ends_from_ids(
    token_ids: np.ndarray,  # [B, T] sampled response ids, right-padded
    mask: np.ndarray,  # [B, T] 1 for generated tokens (a prefix of each row)
    tokenizer,
    *,
    max_steps: int,
    separators: Sequence[str] = DEFAULT_SEPARATORS,
) -> tuple[np.ndarray, np.ndarray, list[str]]:  # step_end [B, K], step_mask [B, K], texts [B]
    """Step ends for responses given as token ids (as the sampler returns them).

    Decodes each row's valid ids with per-token offsets (`decode_with_offsets`), splits the
    text into steps and maps each step to its last token. Also returns the decoded texts, which
    are what the steps were found in.
    """
    token_ids = np.asarray(token_ids)
    mask = np.asarray(mask)
    if token_ids.ndim != 2 or token_ids.shape != mask.shape:
        raise ValueError(
            f"token_ids and mask must both be [B, T]; got {token_ids.shape} and {mask.shape}"
        )
    _check_sizes(max_steps, token_ids.shape[1])
    rows, texts = [], []
    for ids, valid in zip(token_ids, mask):
        length = int(np.sum(valid > 0))
        text, offsets = decode_with_offsets(ids[:length], tokenizer)
        texts.append(text)
        rows.append(last_token_of_spans(split_steps(text, separators=separators), offsets))
    step_end, step_mask = _fill(rows, max_steps=max_steps, max_tokens=token_ids.shape[1])
    return step_end, step_mask, texts


def insert_step_tags(
    text: str, *, step_tag: str = DEFAULT_STEP_TAG, separators: Sequence[str] = DEFAULT_SEPARATORS
) -> str:
    """`text` with `step_tag` written right after the last character of every step."""
    out = []
    position = 0
    for _, end in split_steps(text, separators=separators):
        out.append(text[position:end])
        out.append(step_tag)
        position = end
    out.append(text[position:])
    return "".join(out)


def unique_token_ids(*values: Any) -> tuple[int, ...]:
    """The token ids named by `values` (each an int, a list / tuple of ints, or None), in
    order, each once: how EOS ids from a tokenizer and HF configs are merged."""
    ids: list[int] = []
    for value in values:
        for token in [value] if isinstance(value, int) else list(value or ()):
            if int(token) not in ids:
                ids.append(int(token))
    return tuple(ids)


def pad_id_of(tokenizer) -> int:
    """The id rlr pads rows with: the tokenizer's pad id, else its EOS id, else 0."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def prm_inputs(
    prompts: Sequence[str],
    responses: Sequence[str],
    tokenizer,
    *,
    max_steps: int,
    max_length: int,
    step_tag: str = DEFAULT_STEP_TAG,
    separators: Sequence[str] = DEFAULT_SEPARATORS,
) -> dict[str, np.ndarray]:
    """PRM input batch: prompt ids + ids of the response with a step tag after every step.

    Returns input_ids [B, S] int32 (right-padded with the pad id), attention_mask [B, S] int32,
    tag_positions [B, K] int32 (index of each step's tag token in the sequence; 0 on padding)
    and tag_mask [B, K] float32. Sequences are truncated to S = max_length; tags cut off by
    truncation, and steps beyond K = max_steps, are masked out. The tag must be one token.
    """
    _check_sizes(max_steps, max_length)
    tag_ids = tokenizer.encode(step_tag, add_special_tokens=False)
    if len(tag_ids) != 1:
        raise ValueError(
            f"step_tag {step_tag!r} must be a single token of the tokenizer; it encodes to"
            f" {tag_ids}. Add it as a special token (rlr.tokenizer adds <|step|>)."
        )
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    pad_id = pad_id_of(tokenizer)
    batch = len(prompts)
    input_ids = np.full((batch, max_length), pad_id, np.int32)
    attention_mask = np.zeros((batch, max_length), np.int32)
    ends_per_row = []
    for b, (prompt, response) in enumerate(zip(prompts, responses)):
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        tagged = insert_step_tags(response, step_tag=step_tag, separators=separators)
        response_ids = tokenizer.encode(tagged, add_special_tokens=False)
        ids = (prompt_ids + response_ids)[:max_length]
        input_ids[b, : len(ids)] = ids
        attention_mask[b, : len(ids)] = 1
        positions = [len(prompt_ids) + i for i, t in enumerate(response_ids) if t == tag_ids[0]]
        ends_per_row.append(positions)
    tag_positions, tag_mask = _fill(ends_per_row, max_steps=max_steps, max_tokens=max_length)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "tag_positions": tag_positions,
        "tag_mask": tag_mask,
    }
