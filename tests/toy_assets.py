"""Small, complete assets on disk for tests and benchmarks: an HF tokenizer, synthetic data and
randomly initialised policy / PRM / ORM directories.

Every piece is real (an HF tokenizer directory, HF model directories with the tokenizer files
beside the policy, rlr's JSONL data); only the network weights are random.
"""

from __future__ import annotations

import atexit
import functools
import pathlib
import shutil
import tempfile

import jax

from rlr.data.synthetic import training_corpus, write_datasets
from rlr.models import DecoderConfig, DecoderForCausalLM, DecoderForTokenClassification, init_params
from rlr.tokenizer import train_tokenizer
from rlr.training.loading import export_model


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
    corpus_problems: int = 300,
    max_position_embeddings: int = 512,
) -> pathlib.Path:
    """Writes tokenizer/, data/, policy/, prm/ and orm/ under `root` (once) and returns root."""
    root = pathlib.Path(root)
    if (root / "orm" / "config.json").exists():
        return root
    tokenizer = train_tokenizer(
        training_corpus(num_problems=corpus_problems, seed=0),
        vocab_size=vocab_size,
        out_dir=root / "tokenizer",
    )
    write_datasets(root / "data", num_train=num_train, num_test=num_test, seed=0)
    config = DecoderConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        tie_word_embeddings=True,
        max_position_embeddings=max_position_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    tokenizer_dir = str(root / "tokenizer")
    policy = DecoderForCausalLM(config)
    export_model(
        policy, init_params(policy, jax.random.key(0)), root / "policy", tokenizer_dir=tokenizer_dir
    )
    scorer = DecoderForTokenClassification(config, num_labels=1)
    for seed, name in ((1, "prm"), (2, "orm")):
        export_model(
            scorer, init_params(scorer, jax.random.key(seed)), root / name, tokenizer_dir=None
        )
    return root


@functools.cache
def shared_toy_assets(**sizes: int) -> pathlib.Path:
    """One set of toy assets per distinct `sizes` for the whole test session (read-only)."""
    root = tempfile.mkdtemp(prefix="rlr_toy_assets_")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return make_toy_assets(root, **sizes)
