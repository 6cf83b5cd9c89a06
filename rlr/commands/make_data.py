"""`rlr make-data`: write the synthetic task's datasets (rlr.data.synthetic)."""

from __future__ import annotations

import argparse

from rlr.data.synthetic import write_datasets


def run(args: argparse.Namespace) -> int:
    """`rlr make-data`: write the datasets and print the record counts."""
    counts = write_datasets(
        args.out,
        num_train=args.num_train,
        num_test=args.num_test,
        seed=args.seed,
        min_operations=args.min_operations,
        max_operations=args.max_operations,
        max_digits=args.max_digits,
        operations=tuple(args.operations),
        sft_filler_fraction=args.sft_filler_fraction,
        sft_slip_fraction=args.sft_slip_fraction,
        sft_misread_fraction=args.sft_misread_fraction,
        prm_misread_fraction=args.prm_misread_fraction,
        prm_corrupt_fraction=args.prm_corrupt_fraction,
        prm_filler_fraction=args.prm_filler_fraction,
        prm_filler_labels=args.prm_filler_labels,
    )
    for name, count in counts.items():
        print(f"{name}: {count} records")
    return 0
