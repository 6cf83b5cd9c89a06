"""Step segmentation: character spans, token step ends (text and id paths), PRM inputs."""

from __future__ import annotations

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from rlr.data import (
    insert_step_tags,
    last_token_of_spans,
    prm_inputs,
    read_gsm8k,
    read_math,
    split_steps,
    step_ends,
    step_ends_from_ids,
)
from rlr.data.synthetic import training_corpus
from rlr.tokenizer import STEP_TAG, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    corpus = training_corpus(num_problems=300, seed=0)
    return train_tokenizer(corpus, vocab_size=400, out_dir=tmp_path_factory.mktemp("tok"))


def reference_split(text, separators=("\n\n", "\n")):
    for separator in separators:
        parts = [p.strip() for p in text.split(separator) if p.strip()]
        if len(parts) > 1:
            return parts
    return [text.strip()] if text.strip() else []


def reference_last_tokens(spans, offsets):
    """Brute force: for each step, the largest token index whose non-empty span overlaps it."""
    out = []
    for a, b in spans:
        hits = [t for t, (s, e) in enumerate(offsets) if e > s and s < b and e > a]
        out.append(max(hits) if hits else -1)
    return out


class TestSplitSteps:
    def test_blank_lines_first_then_lines(self):
        text = "A\nB\n\nC\n\n\n  \nD "
        assert [text[a:b] for a, b in split_steps(text)] == ["A\nB", "C", "D"]
        assert [text[a:b] for a, b in split_steps("A\nB\n C ")] == ["A", "B", "C"]
        assert split_steps("only one") == [(0, 8)]
        assert split_steps(" \n\n \n") == []
        assert split_steps("a||b", separators=("||",)) == [(0, 1), (3, 4)]

    def test_empty_separator_is_an_error(self):
        with pytest.raises(ValueError, match="separators"):
            split_steps("x", separators=("",))

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(st.lists(st.sampled_from(["a", "bc", " ", "\n", "\n\n", "你", "🙂", "\t"])))
    def test_matches_reference(self, pieces):
        text = "".join(pieces)
        spans = split_steps(text)
        assert [text[a:b] for a, b in spans] == reference_split(text)
        ends = [x for span in spans for x in span]
        assert ends == sorted(ends)  # ordered, non-overlapping


@st.composite
def spans_and_offsets(draw):
    length = draw(st.integers(2, 40))
    cuts = sorted(draw(st.sets(st.integers(1, length - 1), max_size=length - 1)) | {0, length})
    offsets = []
    for s, e in zip(cuts, cuts[1:]):
        if draw(st.booleans()):
            offsets.append((s, s))  # an empty span: special token or a partial character
        offsets.append((s, e))
    bounds = sorted(draw(st.lists(st.integers(0, length), min_size=0, max_size=12)))
    spans = [(a, b) for a, b in zip(bounds[::2], bounds[1::2]) if b > a]
    return spans, offsets


class TestLastTokenOfSpans:
    def test_straddling_token_ends_both_steps(self):
        # token 1 covers the end of step 0 and the start of step 1.
        offsets = [(0, 3), (3, 7), (7, 9), (9, 9)]
        assert last_token_of_spans([(0, 5), (5, 9)], offsets) == [1, 2]
        assert last_token_of_spans([(0, 4), (5, 6)], offsets) == [1, 1]

    def test_empty_spans_end_nothing(self):
        assert last_token_of_spans([(0, 2)], [(0, 1), (1, 2), (2, 2)]) == [1]
        assert last_token_of_spans([(0, 2)], [(0, 0)]) == [-1]

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(spans_and_offsets())
    def test_matches_brute_force(self, case):
        spans, offsets = case
        assert last_token_of_spans(spans, offsets) == reference_last_tokens(spans, offsets)


RESPONSES = [
    "Tom has 3 + 4 = 7 apples.\nTom has 7 - 2 = 5 apples.\nThe answer is 5.",
    "计算：3 + 4 = 7。\n\n🙂🙂 then 7 × 2 = 14 ✓\n\nThe answer is 14.",
    "Step ready.",
    "",
    "Ann has 12 pens.\nAnn has 12 * 2 = 24 pens.\nStep nothing.\nKeep going.\nThe answer is 24.",
]


def reference_step_ends(text, tokenizer, *, max_steps, max_tokens):
    """Loop reference: a step ends at the first token whose decoded prefix covers the step."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    ends = []
    for _, b in split_steps(text):
        end = next(
            t for t in range(len(ids)) if tokenizer.decode(ids[: t + 1]).startswith(text[:b])
        )
        if end >= max_tokens or len(ends) == max_steps:
            break
        ends.append(end)
    return ends


class TestStepEnds:
    @pytest.mark.parametrize("max_steps, max_tokens", [(8, 64), (2, 64), (8, 12)])
    def test_matches_decoding_reference(self, tokenizer, max_steps, max_tokens):
        step_end, step_mask = step_ends(
            RESPONSES, tokenizer, max_steps=max_steps, max_tokens=max_tokens
        )
        assert step_end.shape == step_mask.shape == (len(RESPONSES), max_steps)
        assert step_end.dtype == np.int32 and step_mask.dtype == np.float32
        for b, text in enumerate(RESPONSES):
            ends = reference_step_ends(text, tokenizer, max_steps=max_steps, max_tokens=max_tokens)
            n = len(ends)
            np.testing.assert_array_equal(step_mask[b], [1.0] * n + [0.0] * (max_steps - n))
            np.testing.assert_array_equal(step_end[b, :n], ends)
            assert (step_end[b, n:] == 0).all()

    def test_multibyte_step_ends_on_completing_byte(self, tokenizer):
        # The tokenizer has no merges for these characters: each is several byte tokens, and the
        # step must end on the last byte of its last character, not the first.
        text = "你好\n🙂"
        step_end, step_mask = step_ends([text], tokenizer, max_steps=4, max_tokens=32)
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert step_mask[0].tolist() == [1, 1, 0, 0]
        assert tokenizer.decode(ids[: step_end[0, 0] + 1]) in ("你好", "你好\n")
        assert step_end[0, 1] == len(ids) - 1
        assert "\ufffd" in tokenizer.decode(ids[: step_end[0, 1]])  # one byte short: broken

    def test_ids_path_equals_text_path(self, tokenizer):
        max_tokens = 48
        encoded = [tokenizer.encode(r, add_special_tokens=False) for r in RESPONSES]
        ids = np.full((len(RESPONSES), max_tokens), tokenizer.pad_token_id, np.int32)
        mask = np.zeros_like(ids)
        for b, row in enumerate(encoded):
            row = row[:max_tokens]
            ids[b, : len(row)] = row
            mask[b, : len(row)] = 1
        got_end, got_mask, texts = step_ends_from_ids(ids, mask, tokenizer, max_steps=6)
        want_end, want_mask = step_ends(RESPONSES, tokenizer, max_steps=6, max_tokens=max_tokens)
        np.testing.assert_array_equal(got_end, want_end)
        np.testing.assert_array_equal(got_mask, want_mask)
        for b in range(len(RESPONSES)):
            assert texts[b] == tokenizer.decode(ids[b, : mask[b].sum()])

    def test_ids_path_ignores_special_tokens(self, tokenizer):
        text = "Tom has 1 + 1 = 2 pens.\nThe answer is 2."
        row = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
        ids = np.asarray([row + [tokenizer.pad_token_id] * 3])
        mask = np.asarray([[1] * len(row) + [0] * 3])
        step_end, step_mask, texts = step_ends_from_ids(ids, mask, tokenizer, max_steps=3)
        assert texts == [text]
        assert step_mask[0].tolist() == [1, 1, 0]
        assert step_end[0, 1] == len(row) - 2  # the "." before EOS, not EOS

    def test_bad_shapes_and_sizes(self, tokenizer):
        with pytest.raises(ValueError, match="max_steps"):
            step_ends(["x"], tokenizer, max_steps=0, max_tokens=4)
        with pytest.raises(ValueError, match=r"\[B, T\]"):
            step_ends_from_ids(np.zeros((2, 3)), np.zeros((2, 4)), tokenizer, max_steps=2)


class TestPrmInputs:
    def test_insert_step_tags(self):
        text = "a\n\nb\n\nc "
        assert insert_step_tags(text) == "a<|step|>\n\nb<|step|>\n\nc<|step|> "
        assert insert_step_tags("x\ny", step_tag=" ки") == "x ки\ny ки"

    def test_tag_positions(self, tokenizer):
        prompts = ["Question: Tom has 3 apples.\nAnswer:\n", "Q:\n"]
        responses = ["Tom has 3 + 4 = 7 apples.\nThe answer is 7.", "A\nB\nC"]
        batch = prm_inputs(prompts, responses, tokenizer, max_steps=3, max_length=64)
        tag_id = tokenizer.convert_tokens_to_ids(STEP_TAG)
        assert batch["input_ids"].shape == (2, 64) and batch["tag_positions"].shape == (2, 3)
        for b in range(2):
            positions = np.flatnonzero(batch["input_ids"][b] == tag_id)
            n = min(len(positions), 3)
            np.testing.assert_array_equal(batch["tag_positions"][b, :n], positions[:n])
            assert batch["tag_mask"][b].sum() == n
        assert batch["tag_mask"][0].tolist() == [1, 1, 0]
        assert batch["tag_mask"][1].tolist() == [1, 1, 1]
        length = batch["attention_mask"][0].sum()
        prompt_len = len(tokenizer.encode(prompts[0], add_special_tokens=False))
        decoded = tokenizer.decode(batch["input_ids"][0, prompt_len:length])
        assert decoded == insert_step_tags(responses[0])

    def test_truncation_drops_cut_tags(self, tokenizer):
        batch = prm_inputs(["Q:\n"], ["A\nB\nC"], tokenizer, max_steps=3, max_length=5)
        assert batch["tag_mask"][0].tolist() == [1, 0, 0]

    def test_multi_token_tag_is_an_error(self, tokenizer):
        with pytest.raises(ValueError, match="single token"):
            prm_inputs(["q"], ["a"], tokenizer, max_steps=2, max_length=8, step_tag="ки")


class TestRealData:
    def _check(self, texts, tokenizer):
        max_tokens = 4096
        counts = [len(split_steps(t)) for t in texts]
        step_end, step_mask = step_ends(
            texts, tokenizer, max_steps=max(counts), max_tokens=max_tokens
        )
        for b, text in enumerate(texts):
            ids = tokenizer.encode(text, add_special_tokens=False)
            assert step_mask[b].sum() == counts[b]
            for k, (_, end) in enumerate(split_steps(text)):
                t = int(step_end[b, k])
                assert tokenizer.decode(ids[: t + 1]).startswith(text[:end])
                assert not tokenizer.decode(ids[:t]).startswith(text[:end])
        # The sampler path (ids + decoding offsets) must agree with the text path.
        encoded = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
        width = max(map(len, encoded))
        ids = np.zeros((len(texts), width), np.int32)
        mask = np.zeros_like(ids)
        for b, row in enumerate(encoded):
            ids[b, : len(row)], mask[b, : len(row)] = row, 1
        got_end, got_mask, decoded = step_ends_from_ids(ids, mask, tokenizer, max_steps=max(counts))
        assert decoded == texts
        np.testing.assert_array_equal(got_mask, step_mask)
        np.testing.assert_array_equal(got_end, step_end)

    def test_gsm8k_solutions(self, real_data, tokenizer):
        problems = read_gsm8k(real_data / "gsm8k_test.jsonl").records[:300]
        self._check([p.solution for p in problems], tokenizer)

    def test_math500_solutions(self, real_data, tokenizer):
        problems = read_math(real_data / "math500_test.jsonl").records[:150]
        texts = [p.solution for p in problems]
        blocks = [len([x for x in t.split("\n\n") if x.strip()]) for t in texts]
        assert sum(b > 1 for b in blocks) > 20  # real multi-paragraph solutions are covered
        self._check(texts, tokenizer)
