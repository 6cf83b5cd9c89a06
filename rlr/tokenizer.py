"""A small Qwen2-style byte-level BPE tokenizer, trained locally and saved in HF format.

Same pre-tokenization as Qwen2 (its split regex, with every digit its own pre-token so numbers
are spelled digit by digit), byte-level alphabet (any UTF-8 text round-trips), the Qwen special
tokens plus a step tag, and a Qwen-style chat template. `AutoTokenizer.from_pretrained(out_dir)`
(or `load_fast_tokenizer`, without importing torch) loads the result offline.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import processors as token_processors

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
STEP_TAG = "<|step|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, STEP_TAG)

# Qwen2's pre-tokenizer pattern: \p{N} matches one digit, so digits are never merged.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2-style ChatML; unlike Qwen2 no default system message is added, to keep prompts short.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build_bpe_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE `tokenizers.Tokenizer` with Qwen2's pipeline."""
    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = token_processors.ByteLevel(trim_offsets=False)
    return tokenizer


# tokenizer_config.json's names for the model-agnostic fast tokenizer (transformers 5 and 4)
GENERIC_TOKENIZER_CLASSES = frozenset({"TokenizersBackend", "PreTrainedTokenizerFast"})


def load_fast_tokenizer(directory: str | os.PathLike):
    """The tokenizer saved in `directory` (tokenizer.json + tokenizer_config.json), loaded as
    `AutoTokenizer.from_pretrained` loads it.

    A directory whose tokenizer_config.json names the model-agnostic class (rlr's own
    tokenizers, Llama 3's) is loaded through that class directly: `AutoTokenizer` resolves to
    the same class, but importing its model registry imports torch where torch is installed,
    about a second of every command's start. Any other class (Qwen2Tokenizer, LlamaTokenizer,
    ...) goes through `AutoTokenizer`, whose model-specific classes may change the pipeline.
    """
    directory = pathlib.Path(directory)
    config_path = directory / "tokenizer_config.json"
    named = None
    if config_path.is_file():
        try:
            named = json.loads(config_path.read_text()).get("tokenizer_class")
        except (json.JSONDecodeError, AttributeError) as error:
            raise ValueError(f"{config_path}: not a JSON object ({error})") from None
    if named in GENERIC_TOKENIZER_CLASSES:
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(directory)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


def train_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int = 512,
    out_dir: str | os.PathLike,
    min_frequency: int = 2,
):
    """Train the BPE on `texts`, save it to `out_dir` in HF format and return it loaded.

    Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json. eos and pad are
    <|endoftext|>; <|im_start|>, <|im_end|> and the step tag <|step|> are special tokens. The
    256 byte symbols and the 4 special tokens come first, so vocab_size must be at least 260.
    Returns a `transformers.PreTrainedTokenizerFast`.
    """
    from transformers import PreTrainedTokenizerFast

    minimum = 256 + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size must be >= {minimum} (bytes + special tokens); got {vocab_size}"
        )
    tokenizer = build_bpe_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END, STEP_TAG],
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    fast.chat_template = CHAT_TEMPLATE
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    special_map = {
        "eos_token": ENDOFTEXT,
        "pad_token": ENDOFTEXT,
        "additional_special_tokens": [IM_START, IM_END, STEP_TAG],
    }
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    return load_fast_tokenizer(out_dir)
