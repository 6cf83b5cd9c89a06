"""Small, complete PPO assets on disk (tokenizer, synthetic data, random policy / PRM / ORM).

For tests, benchmarks and trying the PPO loop without training anything first: every piece is
real (an HF tokenizer directory, HF model directories, rlr's JSONL data) but the networks are
randomly initialised.
"""

from __future__ import annotations

import pathlib

import jax

from rlr.data.synthetic import training_corpus, write_datasets
from rlr.models import (
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForTokenClassification,
    init_params,
    save_pretrained,
)
from rlr.tokenizer import train_tokenizer


def make_toy_assets(
    root: str | pathlib.Path,
    *,
    hidden_size: int = 32,
    intermediate_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    vocab_size: int = 300,
    num_train: int = 64,
    num_test: int = 8,
) -> pathlib.Path:
    """Writes tokenizer/, data/, policy/, prm/ and orm/ under `root` (once) and returns root."""
    root = pathlib.Path(root)
    if (root / "orm" / "config.json").exists():
        return root
    tokenizer = train_tokenizer(
        training_corpus(num_problems=300, seed=0), vocab_size=vocab_size, out_dir=root / "tokenizer"
    )
    write_datasets(root / "data", num_train=num_train, num_test=num_test, seed=0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        tie_word_embeddings=True,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    policy = Qwen2ForCausalLM(config)
    save_pretrained(policy, init_params(policy, jax.random.key(0)), root / "policy")
    scorer = Qwen2ForTokenClassification(config, num_labels=1)
    save_pretrained(scorer, init_params(scorer, jax.random.key(1)), root / "prm")
    save_pretrained(scorer, init_params(scorer, jax.random.key(2)), root / "orm")
    return root
