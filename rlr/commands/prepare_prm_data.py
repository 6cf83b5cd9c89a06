"""`rlr prepare-prm-data`: public step-labelled data to rlr's StepLabelled JSONL
(rlr.data.prepare)."""

from __future__ import annotations

import argparse
import json

from rlr.data.prepare import prepare_prm_data
from rlr.data.readers import FIX_HINT, MalformedRecordError


def run(args: argparse.Namespace) -> int:
    """`rlr prepare-prm-data`: convert, then print the summary as one line of JSON."""
    try:
        summary = prepare_prm_data(
            args.input, args.out, args.format, skip_malformed=args.skip_malformed
        )
    except MalformedRecordError as err:
        message = str(err).replace(FIX_HINT, "fix the line or pass --skip-malformed")
        raise MalformedRecordError(message) from None
    print(json.dumps(summary))
    return 0
