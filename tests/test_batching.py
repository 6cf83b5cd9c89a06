"""rlr.training.batching: PPO-layout rows from text, step ends, targets, the epoch iterator."""

from __future__ import annotations

import atexit
import functools
import pathlib
import shutil
import tempfile

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from rlr.data.prompts import build_prompt
from rlr.data.segmentation import step_ends_from_ids, step_texts
from rlr.data.synthetic import generate_problems, training_corpus
from rlr.tokenizer import train_tokenizer
from rlr.training import batching


@functools.cache
def tokenizer_dir() -> pathlib.Path:
    """A small byte-level BPE trained once per session on the synthetic corpus, in a temporary
    directory (shared, read-only, by the training tests)."""
    out_dir = pathlib.Path(tempfile.mkdtemp(prefix="rlr-test-tok-"))
    atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
    train_tokenizer(training_corpus(num_problems=300), vocab_size=400, out_dir=out_dir)
    return out_dir


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir())


PROBLEMS = generate_problems(6, seed=3)
PROMPTS = [build_prompt(p.question) for p in PROBLEMS]
RESPONSES = [p.solution for p in PROBLEMS]


def reference_rows(tokenizer, prompts, responses, *, prompt_len, response_len):
    """Plain loop: left-pad / left-truncate prompts, right-pad / right-truncate response+EOS."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    ids, attn, resp_mask = [], [], []
    for prompt, response in zip(prompts, responses):
        p = tokenizer.encode(prompt, add_special_tokens=False)[-prompt_len:]
        r = (tokenizer.encode(response, add_special_tokens=False) + [eos])[:response_len]
        row = [pad] * (prompt_len - len(p)) + p + r + [pad] * (response_len - len(r))
        mask = [0] * (prompt_len - len(p)) + [1] * (len(p) + len(r)) + [0] * (response_len - len(r))
        ids.append(row)
        attn.append(mask)
        resp_mask.append([1.0] * len(r) + [0.0] * (response_len - len(r)))
    return np.array(ids), np.array(attn), np.array(resp_mask)


@pytest.mark.parametrize("prompt_len,response_len", [(80, 90), (20, 12)])
def test_encode_rows_matches_loop_reference(tokenizer, prompt_len, response_len):
    rows = batching.encode_rows(
        tokenizer, PROMPTS, RESPONSES, prompt_len=prompt_len, response_len=response_len
    )
    ids, attn, resp_mask = reference_rows(
        tokenizer, PROMPTS, RESPONSES, prompt_len=prompt_len, response_len=response_len
    )
    np.testing.assert_array_equal(rows["input_ids"], ids)
    np.testing.assert_array_equal(rows["attention_mask"], attn)
    np.testing.assert_array_equal(rows["response_mask"], resp_mask)
    assert rows["input_ids"].dtype == np.int32 and rows["response_mask"].dtype == np.float32
    assert rows["input_ids"].shape == (len(PROMPTS), prompt_len + response_len)
    prompt_lengths = [len(tokenizer.encode(p)) for p in PROMPTS]
    response_lengths = [len(tokenizer.encode(r)) + 1 for r in RESPONSES]
    np.testing.assert_array_equal(rows["prompt_truncated"], np.array(prompt_lengths) > prompt_len)
    np.testing.assert_array_equal(
        rows["response_truncated"], np.array(response_lengths) > response_len
    )
    if prompt_len == 20:
        assert rows["prompt_truncated"].all() and rows["response_truncated"].all()


def test_step_ends_are_the_last_token_of_each_line(tokenizer):
    rows = batching.encode_rows(tokenizer, PROMPTS, RESPONSES, prompt_len=80, response_len=90)
    response_ids = rows["input_ids"][:, 80:]
    for b, response in enumerate(RESPONSES):
        lines = step_texts(response)
        assert int(rows["step_mask"][b].sum()) == len(lines)
        for k, line in enumerate(lines):
            end = int(rows["step_end"][b, k])
            upto = tokenizer.decode(response_ids[b, : end + 1])
            before = tokenizer.decode(response_ids[b, :end])
            target = "\n".join(lines[: k + 1])
            assert upto.rstrip().endswith(line) and upto.startswith(target)
            assert not before.startswith(target)
    # identical to what PPO computes from sampled ids
    step_end, step_mask, _ = step_ends_from_ids(
        response_ids, rows["response_mask"], tokenizer, max_steps=16
    )
    np.testing.assert_array_equal(rows["step_end"], step_end)
    np.testing.assert_array_equal(rows["step_mask"], step_mask)


def test_truncated_steps_are_masked(tokenizer):
    rows = batching.encode_rows(tokenizer, PROMPTS, RESPONSES, prompt_len=80, response_len=14)
    for b in range(len(RESPONSES)):
        found = int(rows["step_mask"][b].sum())
        assert found < len(step_texts(RESPONSES[b]))
        assert np.all(rows["step_end"][b, :found] < 14)


def test_step_targets_layout_and_errors():
    step_mask = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
    got = batching.step_targets([[1.0, 0.0, 1.0], [0.25]], step_mask)
    np.testing.assert_array_equal(got, [[1.0, 0.0, 0.0], [0.25, 0.0, 0.0]])
    with pytest.raises(ValueError, match="splits into 2 steps but has 1 labels"):
        batching.step_targets([[1.0], [1.0]], step_mask)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        batching.step_targets([[1.0, 2.0], [1.0]], step_mask)


def test_encode_rows_errors(tokenizer):
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        batching.encode_rows(tokenizer, ["a", "b"], ["c"], prompt_len=4, response_len=4)
    with pytest.raises(ValueError, match="response_len must be >= 1"):
        batching.encode_rows(tokenizer, ["a"], ["c"], prompt_len=4, response_len=0)
    with pytest.raises(ValueError, match="prompt 0 encodes to no tokens"):
        batching.encode_rows(tokenizer, [""], ["c"], prompt_len=4, response_len=4)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(size=st.integers(1, 23), batch_size=st.integers(1, 9), epochs=st.integers(1, 3))
def test_every_epoch_visits_each_index_once(size, batch_size, epochs):
    it = batching.EpochIterator(size, batch_size=batch_size, seed=5)
    total = size * epochs
    drawn = np.concatenate([next(it) for _ in range(-(-total // batch_size))])
    assert all(len(b) == batch_size for b in [next(it)])
    for e in range(epochs):
        assert sorted(drawn[e * size : (e + 1) * size].tolist()) == list(range(size))


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(size=st.integers(1, 17), batch_size=st.integers(1, 7), cut=st.integers(0, 9))
def test_resume_from_position_gives_the_same_batches(size, batch_size, cut):
    straight = batching.EpochIterator(size, batch_size=batch_size, seed=1)
    expected = [next(straight) for _ in range(cut + 4)]
    first = batching.EpochIterator(size, batch_size=batch_size, seed=1)
    for _ in range(cut):
        next(first)
    resumed = batching.EpochIterator.resume(
        size, dict(first.position), batch_size=batch_size, seed=1
    )
    for want in expected[cut:]:
        np.testing.assert_array_equal(next(resumed), want)


def test_epochs_are_shuffled_differently_and_by_seed():
    a = batching.EpochIterator(50, batch_size=50, seed=0)
    b = batching.EpochIterator(50, batch_size=50, seed=1)
    first, second = next(a), next(a)
    assert first.tolist() != second.tolist()
    assert first.tolist() != next(b).tolist()


def test_iterator_errors():
    with pytest.raises(ValueError, match="dataset is empty"):
        batching.EpochIterator(0, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        batching.EpochIterator(3, batch_size=0, seed=0)
    with pytest.raises(ValueError, match="outside"):
        batching.EpochIterator.resume(3, {"epoch": 0, "index": 7}, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="integer 'epoch' and 'index'"):
        batching.EpochIterator.resume(3, {"epoch": 0}, batch_size=1, seed=0)


def test_prompt_width_is_the_power_of_two_above_the_longest_prompt(tokenizer):
    longest = max(len(tokenizer.encode(p, add_special_tokens=False)) for p in PROMPTS)
    want = 1
    while want < max(longest, 16):
        want *= 2
    assert batching.prompt_width(tokenizer, PROMPTS) == want
    assert batching.prompt_width(tokenizer, PROMPTS, limit=want + 40) == want
    assert batching.prompt_width(tokenizer, PROMPTS, limit=longest - 1) == longest - 1  # cut
    assert batching.prompt_width(tokenizer, ["1"]) == 16  # the minimum
    assert batching.prompt_width(tokenizer, ["1"], minimum=1) == 1
    # widths for every prompt set under a limit of 512 from a minimum of 16: 6 shapes at most
    widths = {batching.prompt_width(tokenizer, ["x " * n], limit=512) for n in range(1, 700, 7)}
    assert widths == {16, 32, 64, 128, 256, 512}
    with pytest.raises(ValueError, match="at least one prompt"):
        batching.prompt_width(tokenizer, [])
    with pytest.raises(ValueError, match="limit=0"):
        batching.prompt_width(tokenizer, PROMPTS, limit=0)
