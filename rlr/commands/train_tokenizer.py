"""`rlr train-tokenizer`: the small BPE tokenizer on the synthetic corpus (rlr.tokenizer)."""

from __future__ import annotations

import argparse

from rlr.tokenizer import train_tokenizer


def run(args: argparse.Namespace) -> int:
    """`rlr train-tokenizer`: train on the synthetic corpus and save to --out."""
    from rlr.data.synthetic import training_corpus

    corpus = training_corpus(num_problems=args.num_problems, seed=args.seed)
    tokenizer = train_tokenizer(corpus, vocab_size=args.vocab_size, out_dir=args.out)
    print(f"saved a {len(tokenizer)}-token tokenizer to {args.out}")
    return 0
