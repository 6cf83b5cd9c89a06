"""The small Qwen2-style byte-level BPE tokenizer and prompt building."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from rlr import cli
from rlr.data import build_prompt
from rlr.data.synthetic import generate_problems, training_corpus
from rlr.tokenizer import (
    ENDOFTEXT,
    IM_END,
    IM_START,
    SPECIAL_TOKENS,
    STEP_TAG,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(training_corpus(num_problems=400, seed=0), vocab_size=400, out_dir=out)
    return out


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def test_hf_files_and_special_tokens(tokenizer_dir, tokenizer):
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tokenizer_dir / name).is_file(), name
    special = json.loads((tokenizer_dir / "special_tokens_map.json").read_text())
    assert special["eos_token"] == ENDOFTEXT and special["pad_token"] == ENDOFTEXT
    assert tokenizer.is_fast
    assert tokenizer.eos_token == ENDOFTEXT and tokenizer.pad_token == ENDOFTEXT
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == [0, 1, 2, 3]
    for token in SPECIAL_TOKENS:
        assert tokenizer.encode(token, add_special_tokens=False) == [
            ids[SPECIAL_TOKENS.index(token)]
        ]
    assert len(tokenizer) <= 400


@pytest.mark.parametrize(
    "text",
    [
        "Tom has 3 + 4 = 7 apples.\nThe answer is 7.",
        "  leading spaces\n\n\ttabs and 12345 digits ",
        "Unicode: héllo, 你好, 🙂🚀, ∑ x² ≤ π",
        f"{IM_START}user\nhi{IM_END}\n{STEP_TAG}",
    ],
)
def test_round_trip(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_digits_are_single_tokens(tokenizer):
    tokens = tokenizer.tokenize("1234567890")
    assert tokens == list("1234567890")
    assert all(len(tokenizer.tokenize(f" {n}")) == 2 for n in range(10))


def test_offsets_cover_the_text(tokenizer):
    text = "Ann has 12 * 3 = 36 pens.\n你好 🙂"
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    assert offsets[0][0] == 0 and offsets[-1][1] == len(text)
    for (s0, e0), (s1, e1) in zip(offsets, offsets[1:]):
        assert s0 <= e0 and s1 <= e1  # well-formed spans
        assert s0 <= s1 and e0 <= e1  # in text order
        assert s1 <= e0  # no gaps: consecutive spans touch or share a (multibyte) character
    for (s, e), token_id in zip(offsets, encoded["input_ids"]):
        piece = tokenizer.decode([token_id])
        if "\ufffd" not in piece:  # whole characters: the span is exactly the token's text
            assert text[s:e] == piece


def test_synthetic_solutions_are_short(tokenizer):
    problems = generate_problems(200, seed=9)
    lengths = np.array([len(tokenizer.encode(p.solution)) for p in problems])
    prompts = np.array([len(tokenizer.encode(build_prompt(p.question))) for p in problems])
    # Default knobs (2-4 steps, 2 digits): solutions of about 30-60 tokens.
    assert 25 <= lengths.mean() <= 60 and lengths.max() <= 75, (lengths.mean(), lengths.max())
    assert prompts.max() <= 80


def test_chat_template(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    no_prompt = tokenizer.apply_chat_template(messages[1:], tokenize=False)
    assert no_prompt == "<|im_start|>user\n2+2?<|im_end|>\n"


def test_vocab_size_too_small(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["abc"], vocab_size=100, out_dir=tmp_path)


def test_train_tokenizer_cli(tmp_path):
    out = tmp_path / "tok"
    argv = ["train-tokenizer", "--out", str(out), "--vocab-size", "300", "--num-problems", "50"]
    assert cli.main(argv) == 0
    loaded = AutoTokenizer.from_pretrained(out)
    assert 260 <= len(loaded) <= 300
    assert loaded.decode(loaded.encode("Tom has 5 pens.")) == "Tom has 5 pens."


class TestBuildPrompt:
    def test_plain(self):
        assert build_prompt("What is 2+2?") == "Question: What is 2+2?\nAnswer:\n"
        shots = [("1+1?", "1 + 1 = 2.\nThe answer is 2.")]
        assert build_prompt("2+2?", few_shot=shots) == (
            "Question: 1+1?\nAnswer:\n1 + 1 = 2.\nThe answer is 2.\n\nQuestion: 2+2?\nAnswer:\n"
        )

    def test_few_shot_problems(self):
        problem = generate_problems(1, seed=0)[0]
        prompt = build_prompt("Q?", few_shot=[problem])
        assert prompt.startswith(f"Question: {problem.question}\nAnswer:\n{problem.solution}\n\n")

    def test_chat(self, tokenizer):
        prompt = build_prompt("2+2?", style="chat", tokenizer=tokenizer, few_shot=[("1+1?", "2")])
        assert prompt == (
            "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n"
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
        )

    def test_errors(self):
        with pytest.raises(ValueError, match="style must be one of plain, chat"):
            build_prompt("q", style="fancy")
        with pytest.raises(ValueError, match="chat_template"):
            build_prompt("q", style="chat")
        with pytest.raises(ValueError, match=r"few_shot\[0\]"):
            build_prompt("q", few_shot=["just a string"])


def test_load_fast_tokenizer_matches_auto_tokenizer_and_keeps_named_classes(
    tokenizer_dir, tokenizer, tmp_path
):
    import shutil

    from rlr.tokenizer import load_fast_tokenizer

    direct = load_fast_tokenizer(tokenizer_dir)
    assert type(direct) is type(tokenizer)  # the generic class, as AutoTokenizer resolves it
    text = "Step 1: 12 + 30 = 42. <|step|>"
    assert direct(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert direct.chat_template == tokenizer.chat_template
    # a model-specific class is left to AutoTokenizer
    named = tmp_path / "named"
    shutil.copytree(tokenizer_dir, named)
    config = json.loads((named / "tokenizer_config.json").read_text())
    (named / "tokenizer_config.json").write_text(
        json.dumps({**config, "tokenizer_class": "Qwen2Tokenizer"})
    )
    assert type(load_fast_tokenizer(named)).__name__ == "Qwen2Tokenizer"
    (named / "tokenizer_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="tokenizer_config.json: not a JSON object"):
        load_fast_tokenizer(named)


def test_a_run_starts_without_importing_torch(tokenizer_dir, tmp_path):
    """The tokenizer and the metrics writer, which every command loads, import no torch:
    about a second of every command's start where torch is installed."""
    import subprocess
    import sys

    script = (
        "import sys; from rlr.training.loading import load_tokenizer; "
        "from rlr.training.metrics import MetricsWriter; "
        f"load_tokenizer({str(tokenizer_dir)!r}); "
        f"MetricsWriter({str(tmp_path)!r}).write(1, {{'loss': 1.0}}); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
